// The page `janus serve` serves at /: a chat about images and text-to-image, both
// streamed from the server's OpenAI-compatible API. Plain JS, no build step, no
// external resources: every request goes to the page's own origin.
"use strict";

const KEY_STORAGE = "janus.apiKey";
const IMAGE_TOKENS = 576; // VQ codes per image: the generation progress total
// Images larger than this are re-encoded (longest side MAX_SIDE) before they are sent;
// the model sees 384x384 anyway, and this keeps request bodies small.
const MAX_INLINE_BYTES = 1_500_000;
const MAX_SIDE = 1536;

const $ = (id) => document.getElementById(id);

const state = {
  model: null,
  history: [], // OpenAI chat messages, in order
  pending: [], // {name, url} images for the next user message
  chatAbort: null,
  genAbort: null,
};

// ---------------------------------------------------------------- API helpers

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

/** An Error carrying the message of an OpenAI-style error body, if there is one. */
async function responseError(res) {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    /* not JSON: keep the status line */
  }
  if (res.status === 401) message += " (set the API key at the top of the page)";
  const err = new Error(message);
  err.status = res.status;
  return err;
}

/**
 * Reads a text/event-stream body and calls onData(string) with each event's data.
 * Stops at `data: [DONE]` or the end of the body; if onData throws, the body is
 * cancelled and the error passed on.
 */
async function readSSE(res, onData) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      // Events end with a blank line; the spec allows \n, \r\n or \r line ends.
      let match;
      while ((match = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = block
          .split(/\r\n|\n|\r/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue; // a comment or keep-alive
        if (data === "[DONE]") {
          reader.cancel().catch(() => {});
          return;
        }
        onData(data);
      }
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
}

/** The error inside a streamed event, if the server reported one mid-stream. */
function streamError(event) {
  if (event && event.error) return new Error(event.error.message || JSON.stringify(event.error));
  if (event && event.type === "error") return new Error(event.message || "generation failed");
  return null;
}

// ---------------------------------------------------------------- status and model

async function refreshStatus() {
  const health = $("health");
  try {
    const res = await fetch("/health", { headers: headers(false) });
    health.className = "health " + (res.ok ? "ok" : "warn");
    $("health-text").textContent = res.ok ? "ready" : `health ${res.status}`;
  } catch (_) {
    health.className = "health bad";
    $("health-text").textContent = "offline";
  }
  try {
    const res = await fetch("/v1/models", { headers: headers(false) });
    if (!res.ok) throw await responseError(res);
    const body = await res.json();
    const first = body.data && body.data[0];
    state.model = first ? first.id : null;
    // A path or hub id: the last part reads best; the whole id is in the tooltip.
    $("model-name").textContent = state.model ? state.model.split("/").filter(Boolean).pop() : "no model";
    $("model-name").title = state.model ? `Model served: ${state.model}` : "";
  } catch (err) {
    $("model-name").textContent = err.status === 401 ? "API key needed" : "model unknown";
    $("model-name").title = err.message;
  }
}

function setupApiKey() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => {
    const value = input.value.trim();
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
    refreshStatus();
  });
}

// ---------------------------------------------------------------- chat: attachments

function fileToDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** A data: URL for an image file, re-encoded when it is large. */
async function imageDataURL(file) {
  const url = await fileToDataURL(file);
  if (file.size <= MAX_INLINE_BYTES) return url;
  const img = new Image();
  img.src = url;
  await img.decode();
  const scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/jpeg", 0.92);
}

async function attachFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) {
      showChatError(`${file.name} is not an image`);
      continue;
    }
    try {
      state.pending.push({ name: file.name, url: await imageDataURL(file) });
    } catch (err) {
      showChatError(`could not read ${file.name}: ${err.message}`);
    }
  }
  renderAttachments();
}

function renderAttachments() {
  const list = $("attachments");
  list.replaceChildren();
  state.pending.forEach((item, i) => {
    const li = document.createElement("li");
    li.className = "thumb";
    const img = document.createElement("img");
    img.src = item.url;
    img.alt = `Attached: ${item.name}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove ${item.name}`);
    remove.addEventListener("click", () => {
      state.pending.splice(i, 1);
      renderAttachments();
      $("chat-input").focus();
    });
    li.append(img, remove);
    list.append(li);
  });
}

function setupDropZone() {
  const panel = $("chat-panel");
  let depth = 0; // dragenter/dragleave fire for every child element
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
  panel.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    panel.classList.add("dragging");
  });
  panel.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  panel.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) panel.classList.remove("dragging");
  });
  panel.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    panel.classList.remove("dragging");
    attachFiles(e.dataTransfer.files);
  });
  // Elsewhere on the page, a dropped file must not navigate away from the chat.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// ---------------------------------------------------------------- chat: messages

function addMessage(role, text, images = []) {
  $("chat-empty").hidden = true;
  const wrap = document.createElement("div");
  wrap.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "Janus" : "Error";
  wrap.append(who);
  if (images.length) {
    const row = document.createElement("div");
    row.className = "images";
    for (const item of images) {
      const img = document.createElement("img");
      img.src = item.url;
      img.alt = item.name;
      row.append(img);
    }
    wrap.append(row);
  }
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  renderText(bubble, text);
  wrap.append(bubble);
  $("messages").append(wrap);
  scrollChat();
  return { wrap, bubble };
}

/**
 * Shows text in an element, with C0 control characters (other than newline and tab) and
 * DEL in caret notation (^G), marked up, so a model's stray control bytes stay visible
 * instead of rendering as missing-glyph boxes. The conversation keeps the raw text.
 */
function renderText(el, text) {
  const parts = text.split(/([\u0000-\u0008\u000b-\u001f\u007f])/);
  el.replaceChildren(
    ...parts.map((part, i) => {
      if (i % 2 === 0) return document.createTextNode(part);
      const code = part.charCodeAt(0);
      const span = document.createElement("span");
      span.className = "ctl";
      span.textContent = code === 0x7f ? "^?" : `^${String.fromCharCode(code + 64)}`;
      span.title = `control character U+${code.toString(16).padStart(4, "0").toUpperCase()}`;
      return span;
    }),
  );
}

function scrollChat() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function showChatError(message) {
  const { wrap } = addMessage("error", message);
  wrap.classList.add("error");
  wrap.setAttribute("role", "alert");
}

function setChatBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop").hidden = !busy;
  $("chat-form").setAttribute("aria-busy", String(busy));
}

function numberField(id, fallback) {
  const v = Number.parseFloat($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

async function sendChat() {
  if (state.chatAbort) return;
  const input = $("chat-input");
  const text = input.value.trim();
  const images = state.pending.slice();
  if (!text && !images.length) {
    input.focus();
    return;
  }

  // The user turn: a plain string, or content parts with the images as data: URLs.
  const content = images.length
    ? [
        ...images.map((item) => ({ type: "image_url", image_url: { url: item.url } })),
        ...(text ? [{ type: "text", text }] : []),
      ]
    : text;
  state.history.push({ role: "user", content });
  addMessage("user", text, images);
  input.value = "";
  state.pending = [];
  renderAttachments();

  const { wrap, bubble } = addMessage("assistant", "");
  bubble.classList.add("streaming");
  wrap.setAttribute("aria-busy", "true");
  const abort = new AbortController();
  state.chatAbort = abort;
  setChatBusy(true);

  let answer = "";
  let finish = null;
  const started = performance.now();
  try {
    const body = {
      model: state.model || "janus",
      messages: state.history,
      stream: true,
      max_tokens: Math.max(1, Math.round(numberField("chat-max-tokens", 256))),
      temperature: numberField("chat-temperature", 0),
    };
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: abort.signal,
    });
    if (!res.ok) throw await responseError(res);
    await readSSE(res, (data) => {
      const chunk = JSON.parse(data);
      const err = streamError(chunk);
      if (err) throw err;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) return;
      if (choice.delta && typeof choice.delta.content === "string") {
        answer += choice.delta.content;
        renderText(bubble, answer);
        scrollChat();
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    });
  } catch (err) {
    if (err.name !== "AbortError") {
      if (!answer) wrap.remove();
      showChatError(err.message);
    }
  } finally {
    bubble.classList.remove("streaming");
    wrap.removeAttribute("aria-busy");
    state.chatAbort = null;
    setChatBusy(false);
  }

  if (answer || wrap.isConnected) {
    // A stopped answer stays in the conversation, as far as it got.
    state.history.push({ role: "assistant", content: answer });
    const meta = document.createElement("span");
    meta.className = "meta";
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    meta.textContent = `${finish || "stopped"} · ${secs} s`;
    wrap.append(meta);
    wrap.dataset.done = "true";
  } else {
    // The request failed before any answer: forget the user turn too, so it can be resent.
    state.history.pop();
  }
  input.focus();
}

function setupChat() {
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sendChat();
  });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendChat();
    }
  });
  $("chat-input").addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData.files || []).filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      e.preventDefault();
      attachFiles(files);
    }
  });
  $("chat-attach").addEventListener("click", () => $("chat-file").click());
  $("chat-file").addEventListener("change", (e) => {
    attachFiles(e.target.files);
    e.target.value = "";
    $("chat-input").focus();
  });
  $("chat-stop").addEventListener("click", () => state.chatAbort && state.chatAbort.abort());
  $("chat-clear").addEventListener("click", () => {
    if (state.chatAbort) state.chatAbort.abort();
    state.history = [];
    state.pending = [];
    renderAttachments();
    for (const el of Array.from($("messages").children)) if (el.id !== "chat-empty") el.remove();
    $("chat-empty").hidden = false;
    $("chat-input").focus();
  });
  setupDropZone();
}

// ---------------------------------------------------------------- text to image

function setProgress(step, total) {
  const bar = $("gen-progress");
  bar.max = total;
  bar.value = Math.min(step, total);
  const pct = Math.round((100 * bar.value) / total);
  // Mirrored as attributes so tests and assistive tech can observe each update.
  bar.setAttribute("aria-valuenow", String(bar.value));
  bar.dataset.step = String(bar.value);
  $("gen-progress-pct").textContent = `${pct}%`;
  $("gen-progress-label").textContent =
    step >= total ? "Decoding the image…" : `Drawing: token ${step} of ${total}`;
}

/**
 * Shows a partial image: image `index` decoded from the codes drawn by `step` of `total`
 * (the server fills the rest from the rows above). The rows not drawn yet are veiled.
 */
function showPreview(b64, index, step, total) {
  const box = $("gen-previews");
  const i = Number.isInteger(index) ? index : 0;
  let frame = box.querySelector(`[data-index="${i}"]`);
  if (!frame) {
    frame = document.createElement("div");
    frame.className = "preview";
    frame.dataset.index = String(i);
    const img = document.createElement("img");
    const veil = document.createElement("div");
    veil.className = "veil";
    frame.append(img, veil);
    box.append(frame);
  }
  const done = total ? Math.min(1, step / total) : 1;
  const img = frame.querySelector("img");
  img.src = `data:image/png;base64,${b64}`;
  img.alt = `Preview of image ${i + 1}, ${Math.round(done * 100)}% drawn`;
  // Whole code rows drawn (24 of them for 576 codes) stay clear.
  const rows = Math.sqrt(total || 1);
  frame.querySelector(".veil").style.top = `${(Math.floor(done * rows) / rows) * 100}%`;
}

function addToGallery(item, meta, index) {
  const src = item.b64_json ? `data:image/png;base64,${item.b64_json}` : item.url;
  if (!src) return;
  const li = document.createElement("li");
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = `Generated image ${index + 1} for “${meta.prompt}”`;
  img.title = meta.prompt;
  const cap = document.createElement("figcaption");
  const label = document.createElement("span");
  const seed = meta.seed != null ? `seed ${meta.seed}` : "random seed";
  label.textContent = `${seed} · #${index + 1} · cfg ${meta.cfg_weight}`;
  const link = document.createElement("a");
  link.href = src;
  link.download = `janus-${meta.seed != null ? meta.seed : "r"}-${index}.png`;
  link.textContent = "Save";
  link.setAttribute("aria-label", `Save image ${index + 1}`);
  cap.append(label, link);
  fig.append(img, cap);
  li.append(fig);
  $("gallery").prepend(li);
  $("gallery-empty").hidden = true;
  $("gallery-clear").hidden = false;
}

function setGenBusy(busy) {
  $("gen-submit").disabled = busy;
  $("gen-cancel").hidden = !busy;
  $("gen-form").setAttribute("aria-busy", String(busy));
}

function showGenError(message) {
  const el = $("gen-error");
  el.textContent = message;
  el.hidden = !message;
}

async function generate() {
  if (state.genAbort) return;
  const prompt = $("gen-prompt").value.trim();
  if (!prompt) {
    showGenError("Write a prompt first.");
    $("gen-prompt").focus();
    return;
  }
  showGenError("");
  const seedText = $("gen-seed").value.trim();
  const meta = {
    prompt,
    n: Math.min(4, Math.max(1, Math.round(numberField("gen-n", 1)))),
    seed: seedText === "" ? null : Math.round(Number(seedText)),
    cfg_weight: numberField("gen-cfg", 5),
    temperature: numberField("gen-temperature", 1),
  };
  const body = {
    model: state.model || "janus",
    prompt,
    n: meta.n,
    size: "384x384",
    response_format: "b64_json",
    cfg_weight: meta.cfg_weight,
    temperature: meta.temperature,
    stream: true,
    // Previews of the images while they are drawn; the server sends them only when they
    // would arrive before the finished images (not on small, fast models).
    partial_images: 2,
  };
  if (meta.seed != null) body.seed = meta.seed;

  $("gen-status").hidden = false;
  $("gen-previews").replaceChildren();
  setProgress(0, IMAGE_TOKENS);
  $("gen-progress-label").textContent = "Waiting for the model…";
  const abort = new AbortController();
  state.genAbort = abort;
  setGenBusy(true);
  let images = null;
  const started = performance.now();
  try {
    const res = await fetch("/v1/images/generations", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(body),
      signal: abort.signal,
    });
    if (!res.ok) throw await responseError(res);
    const type = res.headers.get("content-type") || "";
    if (type.includes("text/event-stream")) {
      await readSSE(res, (data) => {
        const event = JSON.parse(data);
        const err = streamError(event);
        if (err) throw err;
        if (event.type === "progress") setProgress(event.step, event.total || IMAGE_TOKENS);
        else if (event.type === "partial_image") {
          (event.data || []).forEach((item, i) => {
            if (item.b64_json) showPreview(item.b64_json, i, event.step, event.total);
          });
        }
        else if (event.type === "result") {
          images = event.data || [];
          if (event.seed != null && meta.seed == null) meta.seed = event.seed;
        }
      });
    } else {
      // A server without streamed generation answers the plain OpenAI response.
      const json = await res.json();
      images = json.data || [];
    }
    if (!images) throw new Error("the server ended the stream without a result");
    setProgress(IMAGE_TOKENS, IMAGE_TOKENS);
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    const count = `${images.length} image${images.length === 1 ? "" : "s"}`;
    $("gen-progress-label").textContent = `Done: ${count} in ${secs} s`;
    // Prepend in reverse so the gallery shows #1 first.
    images
      .map((item, i) => [item, i])
      .reverse()
      .forEach(([item, i]) => addToGallery(item, meta, i));
    $("gen-previews").replaceChildren();
  } catch (err) {
    if (err.name === "AbortError") {
      $("gen-progress-label").textContent = "Cancelled";
    } else {
      $("gen-progress-label").textContent = "Failed";
      showGenError(err.message);
    }
  } finally {
    state.genAbort = null;
    setGenBusy(false);
  }
}

function setupGenerate() {
  $("gen-form").addEventListener("submit", (e) => {
    e.preventDefault();
    generate();
  });
  $("gen-prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      generate();
    }
  });
  $("gen-cancel").addEventListener("click", () => state.genAbort && state.genAbort.abort());
  $("gallery-clear").addEventListener("click", () => {
    $("gallery").replaceChildren();
    $("gallery-empty").hidden = false;
    $("gallery-clear").hidden = true;
  });
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", () => {
  setupApiKey();
  setupChat();
  setupGenerate();
  refreshStatus();
});
