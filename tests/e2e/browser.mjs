// Browser test of the page `janus serve` serves at /, in headless Debian Chromium driven by
// playwright-core (no browser download). Starts its own server on the tiny fixture model
// unless JANUS_URL points at a running one.
//
//   node tests/e2e/browser.mjs [--screenshot PATH]
//
// Exits non-zero on any failure.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.JANUS_BIN || resolve(ROOT, "target/debug/janus");
const MODEL = resolve(ROOT, "fixtures/models/tiny-pro");
const IMAGE = resolve(ROOT, "fixtures/images/wide.png");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const argScreenshot = process.argv.indexOf("--screenshot");
const SCREENSHOT =
  argScreenshot > 0 ? resolve(process.argv[argScreenshot + 1]) : resolve(ROOT, "docs/screenshots/web.png");
// The partial-image preview, next to the page screenshot (web.png -> web-preview.png).
const PREVIEW_SCREENSHOT = SCREENSHOT.replace(/(\.png)?$/, "-preview.png");
const TIMEOUT_MS = 120_000;

function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

function log(message) {
  console.log(`[browser] ${message}`);
}

/** Starts `janus serve --port 0`; resolves with {url, proc} once it prints its address. */
async function startServer(extraArgs = []) {
  check(existsSync(BIN), `${BIN} is missing: run \`cargo build -p janus-cli\` first`);
  const proc = spawn(BIN, ["serve", "--model", MODEL, "--port", "0", ...extraArgs], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: proc.stdout });
  const first = await Promise.race([
    once(lines, "line").then(([line]) => line),
    once(proc, "exit").then(([code]) => {
      throw new Error(`janus serve exited with ${code} before printing its address`);
    }),
    new Promise((_, reject) => setTimeout(() => reject(new Error("janus serve did not start in 60 s")), 60_000)),
  ]);
  const m = /^listening on (http:\/\/127\.0\.0\.1:\d+)\/?$/.exec(first.trim());
  check(m, `unexpected first line ${JSON.stringify(first)}`);
  lines.on("line", () => {}); // keep draining stdout
  return { url: m[1], proc };
}

async function stopServer(proc) {
  if (proc.exitCode !== null) return proc.exitCode;
  const exited = once(proc, "exit");
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [code, signal] = await exited;
  clearTimeout(timer);
  check(code === 0, `janus serve exited with ${code ?? signal} after SIGTERM`);
  return code;
}

function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

async function run(url) {
  const origin = new URL(url).origin;
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);

    const requests = [];
    const problems = [];
    context.on("request", (r) => requests.push({ url: r.url(), method: r.method(), body: r.postData() }));
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`));

    log(`open ${url}/`);
    await page.goto(`${url}/`);
    await page.waitForFunction(() => {
      const t = document.getElementById("model-name").textContent;
      return t && t !== "connecting…";
    });
    const modelName = await page.textContent("#model-name");
    check(!/unknown|needed/.test(modelName), `model name shown as ${modelName}`);
    await page.waitForSelector("#health.ok");

    // Every form control has an accessible name.
    const unnamed = await page.evaluate(() =>
      Array.from(document.querySelectorAll("input, textarea, select, button"))
        .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
        .map((el) => el.id || el.outerHTML.slice(0, 60)),
    );
    check(unnamed.length === 0, `controls without a label: ${unnamed.join(", ")}`);

    // ---- chat: drop an image, remove it, attach it with the file input, ask
    const png = readFileSync(IMAGE).toString("base64");
    await page.evaluate(async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
      const panel = document.getElementById("chat-panel");
      for (const type of ["dragenter", "dragover", "drop"]) {
        panel.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
      }
    }, png);
    await page.waitForSelector("#attachments img[alt='Attached: dropped.png']");
    log("drag-and-drop attached a thumbnail");
    await page.click("button[aria-label='Remove dropped.png']");
    check((await page.locator("#attachments img").count()) === 0, "thumbnail not removed");

    await page.setInputFiles("#chat-file", IMAGE);
    await page.waitForSelector("#attachments img[alt='Attached: wide.png']");
    await page.fill("#chat-input", "What is in this picture?");
    await page.press("#chat-input", "Enter");
    const first = page.locator(".msg.assistant").nth(0);
    await first.and(page.locator("[data-done='true']")).waitFor();
    const answer = (await first.locator(".bubble").textContent()) || "";
    check(answer.length > 0, "empty streamed answer");
    check((await page.locator(".msg.user .images img").count()) === 1, "the user turn shows no thumbnail");
    check((await page.locator("#attachments img").count()) === 0, "attachments not cleared after sending");
    log(`streamed answer: ${JSON.stringify(answer)}`);

    const chatBodies = requests
      .filter((r) => r.url === `${origin}/v1/chat/completions`)
      .map((r) => JSON.parse(r.body));
    check(chatBodies.length === 1, `${chatBodies.length} chat requests`);
    const sent = chatBodies[0];
    check(sent.stream === true, "chat request not streamed");
    const parts = sent.messages[0].content;
    check(
      Array.isArray(parts) && parts.some((p) => p.type === "image_url" && p.image_url.url.startsWith("data:image/png;base64,")),
      "no image_url data: URL part in the request",
    );

    // A second turn carries the history: user, assistant, user.
    await page.fill("#chat-input", "Tell me more.");
    await page.click("#chat-send");
    await page.locator(".msg.assistant").nth(1).and(page.locator("[data-done='true']")).waitFor();
    const second = JSON.parse(requests.filter((r) => r.url === `${origin}/v1/chat/completions`)[1].body);
    check(
      second.messages.map((m) => m.role).join(",") === "user,assistant,user",
      `second turn history ${second.messages.map((m) => m.role)}`,
    );
    // The bubble shows control characters in caret notation; the history keeps them raw.
    const shown = await page.evaluate((t) => {
      const el = document.createElement("div");
      renderText(el, t);
      return el.textContent;
    }, second.messages[1].content);
    check(shown === answer, "history lost the first answer");
    log("second turn sent the history");

    // ---- text to image: n=2, fixed seed; watch the progress bar
    await page.evaluate(() => {
      window.__steps = [];
      const bar = document.getElementById("gen-progress");
      new MutationObserver(() => window.__steps.push(Number(bar.dataset.step))).observe(bar, {
        attributes: true,
        attributeFilter: ["data-step"],
      });
      window.__previews = 0;
      new MutationObserver((records) => {
        for (const r of records) window.__previews += r.addedNodes.length;
      }).observe(document.getElementById("gen-previews"), { childList: true });
    });
    await page.fill("#gen-prompt", "A red fox in the snow, watercolor");
    await page.fill("#gen-n", "2");
    await page.fill("#gen-seed", "42");
    await page.fill("#gen-cfg", "5");
    await page.fill("#gen-temperature", "1");
    const started = Date.now();
    await page.click("#gen-submit");
    if (!process.env.JANUS_URL) {
      // The preview stays until the finished images arrive, which on this tiny model can
      // be milliseconds later: the screenshot is best effort, and the preview itself is
      // checked through the __previews counter below.
      const preview = "#gen-previews .preview img[src^='data:image/png']";
      const seen = await Promise.race([
        // The loser keeps waiting until it times out; its rejection is caught here.
        page.waitForSelector(preview).then(
          () => true,
          () => false,
        ),
        page.waitForFunction(() => document.querySelectorAll("#gallery img").length === 2).then(
          () => false,
          () => false,
        ),
      ]);
      let shot = false;
      if (seen) {
        mkdirSync(dirname(PREVIEW_SCREENSHOT), { recursive: true });
        shot = await page
          .locator("#gen-status")
          .screenshot({ path: PREVIEW_SCREENSHOT, timeout: 5000 })
          .then(() => true, () => false);
      }
      log(shot ? `preview screenshot: ${PREVIEW_SCREENSHOT}` : "preview gone before its screenshot");
    }
    await page.waitForFunction(() => document.querySelectorAll("#gallery img").length === 2);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    const bar = await page.evaluate(() => {
      const el = document.getElementById("gen-progress");
      return { value: el.value, max: el.max, label: document.getElementById("gen-progress-pct").textContent };
    });
    check(bar.value === bar.max && bar.max === 576, `progress bar at ${bar.value}/${bar.max}`);
    check(bar.label === "100%", `progress label ${bar.label}`);
    const steps = await page.evaluate(() => window.__steps);
    const between = steps.filter((s) => s > 0 && s < 576);
    check(between.length > 0, `no intermediate progress (saw ${steps.slice(0, 10)})`);
    const genBody = JSON.parse(requests.find((r) => r.url === `${origin}/v1/images/generations`).body);
    check(
      genBody.n === 2 && genBody.seed === 42 && genBody.stream === true && genBody.partial_images === 2,
      `request ${JSON.stringify(genBody)}`,
    );
    const sizes = await page.evaluate(() =>
      Array.from(document.querySelectorAll("#gallery img")).map((i) => [i.naturalWidth, i.naturalHeight]),
    );
    check(sizes.every(([w, h]) => w === 384 && h === 384), `gallery image sizes ${JSON.stringify(sizes)}`);
    const previews = await page.evaluate(() => window.__previews);
    log(`generated 2 images in ${secs} s; ${steps.length} progress updates, ${previews} preview images`);
    if (!process.env.JANUS_URL) {
      // On a fresh server the decoder's speed is not known yet, so the first preview is
      // sent (later ones are skipped on this fast model): one frame per image.
      check(previews === 2, `expected 2 preview frames, saw ${previews}`);
    }

    // ---- screenshot
    await page.waitForSelector("#gen-submit:not([disabled])");
    await page.mouse.move(0, 0);
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.locator("#chat-input").blur();
    await page.screenshot({ path: SCREENSHOT });
    log(`screenshot: ${SCREENSHOT}`);

    // ---- only same-origin requests
    const foreign = requests.filter((r) => {
      if (r.url.startsWith("data:") || r.url.startsWith("blob:")) return false;
      return new URL(r.url).origin !== origin;
    });
    check(foreign.length === 0, `requests to other origins: ${foreign.map((r) => r.url).join(", ")}`);
    log(`${requests.length} requests, all same-origin`);
    check(problems.length === 0, problems.join("; "));
  } finally {
    await browser.close();
  }
}

/**
 * Against a server started with --api-key: the page loads without the key, says it needs
 * one, and works once the key is typed in (sent as a Bearer token, kept in localStorage).
 */
async function runWithKey(url) {
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT_MS);
    const auth = [];
    page.on("request", (r) => r.url().includes("/v1/") && auth.push(r.headers()["authorization"] || null));
    await page.goto(`${url}/`);
    await page.waitForFunction(() => document.getElementById("model-name").textContent === "API key needed");
    await page.fill("#api-key", "browser-key");
    await page.press("#api-key", "Tab"); // commits the field (change event)
    await page.waitForFunction(() => document.getElementById("model-name").textContent === "tiny-pro");
    check((await page.evaluate(() => localStorage.getItem("janus.apiKey"))) === "browser-key", "key not stored");
    await page.fill("#chat-input", "Hello");
    await page.press("#chat-input", "Enter");
    await page.locator(".msg.assistant[data-done='true']").waitFor();
    check((await page.locator(".msg.error").count()) === 0, "chat failed with the key set");
    check(auth[0] === null && auth.at(-1) === "Bearer browser-key", `authorization headers ${JSON.stringify(auth)}`);
    // The key survives a reload.
    await page.reload();
    await page.waitForFunction(() => document.getElementById("model-name").textContent === "tiny-pro");
    log("API key: refused without, works with, kept across a reload");
  } finally {
    await browser.close();
  }
}

let server = null;
let failed = false;
try {
  let url = process.env.JANUS_URL;
  if (!url) {
    server = await startServer();
    url = server.url;
  }
  await run(url.replace(/\/$/, ""));
  if (!process.env.JANUS_URL) {
    await stopServer(server.proc);
    server = await startServer(["--api-key", "browser-key"]);
    await runWithKey(server.url);
  }
  log("ok");
} catch (err) {
  failed = true;
  console.error(`[browser] FAILED: ${err.stack || err}`);
} finally {
  if (server) {
    try {
      await stopServer(server.proc);
    } catch (err) {
      failed = true;
      console.error(`[browser] FAILED: ${err.message}`);
    }
  }
}
process.exit(failed ? 1 : 0);
