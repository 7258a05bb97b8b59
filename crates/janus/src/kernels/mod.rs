//! Hand-written CPU kernels for the hot paths candle is slow at.
//!
//! candle's CPU bf16 matrix products run at a small fraction of what the hardware allows
//! (docs/kernels.md), so the linear layers, the
//! attention over the KV cache and the quantised weights have their own kernels here.
//!
//! Every kernel has implementations chosen at run time: on x86-64 AVX-512 BF16
//! (`VDPBF16PS`, two bf16 products per f32 lane), AVX2 + FMA (bf16 widened to f32), and
//! AVX2 with AVX-VNNI (the quantised products' integer dots in one instruction) and
//! AVX-512 VNNI without BF16 (the AVX-512 quantised kernels, packed bf16 products widened
//! into 512-bit FMAs, elementwise passes on 512 bits, row tiles at AVX2); on
//! aarch64 NEON (bf16 widened to f32), NEON with the dot-product extension (`SDOT`) and
//! with BF16 (`BFDOT`); and everywhere a plain scalar one that the tests compare the fast
//! ones with. `JANUS_KERNELS=plain|avx2|avx-vnni|avx512-vnni|avx512|neon|neon-dotprod|
//! neon-bf16` forces one (never a level the CPU lacks). Each level's bodies live in a
//! file named after it (`quant/avx2.rs`, `quant/neon.rs`), so a new level is new files
//! plus one dispatch arm; a level that replaces a few kernels of another (`AvxVnni`,
//! `Avx512Vnni` over AVX2) takes the rest from it ([`Isa::is_avx2`]).
//!
//! Threads come from rayon's global pool (the one candle's own CPU ops use), so the
//! kernels and candle never run two pools against each other.

pub mod attention;
pub mod conv;
pub mod fused;
pub mod gemm;
pub mod math;
pub mod packed;
pub mod quant;

use std::sync::OnceLock;

/// Instruction-set level a kernel runs at. Within an architecture a later level is the
/// better one where the CPU has both, and needs every feature of the levels before it but
/// `AvxVnni` (AVX-512 CPUs without AVX-VNNI, as Zen 4 and Ice Lake, skip it:
/// [`Isa::available`]); across architectures the order means nothing beyond `Plain`
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable scalar Rust: the reference the fast paths are tested against.
    Plain,
    /// AVX2 + FMA + F16C (x86-64 since 2013).
    Avx2,
    /// AVX2 with AVX-VNNI's 256-bit `VPDPBUSD`/`VPDPWSSD` (Intel Alder Lake and later
    /// client CPUs, Sapphire Rapids, AMD Zen 5): the AVX2 kernels, but the quantised
    /// products' integer dots take one instruction where AVX2 takes two or three.
    AvxVnni,
    /// AVX-512 F/BW/VL with AVX512-VNNI but no BF16 (Intel Cascade Lake, Ice Lake, Tiger
    /// Lake, Rocket Lake): the AVX-512 VNNI quantised products, the packed bf16 ones
    /// widened into 512-bit FMAs, elementwise passes on 512 bits, the bf16 row tiles at
    /// AVX2.
    Avx512Vnni,
    /// AVX-512 F/BW/VL + BF16 + VNNI (Zen 4, Sapphire Rapids and later).
    Avx512Bf16,
    /// aarch64's Advanced SIMD (every aarch64 CPU): bf16 widened to f32, f32 FMA,
    /// widening integer multiplies.
    Neon,
    /// NEON with the dot-product extension (`SDOT`/`UDOT`: Cortex-A76, Neoverse N1,
    /// Apple M1 and later).
    NeonDotprod,
    /// NEON with dot products and BF16 (`BFDOT`: Neoverse V1/N2, Graviton 3, Apple M2
    /// and later).
    NeonBf16,
}

impl Isa {
    /// The best level this CPU supports: every feature a kernel of that level uses is
    /// present, so kernels test the level alone (AVX512-VNNI and F16C come with AVX-512
    /// BF16 and AVX2 on every CPU that has those).
    pub fn detect() -> Isa {
        Isa::available().pop().unwrap_or(Isa::Plain)
    }

    /// Whether this CPU has every feature the level's kernels use.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            match self {
                Isa::Avx2 => return avx2,
                Isa::AvxVnni => return avx2 && has!("avxvnni"),
                Isa::Avx512Vnni | Isa::Avx512Bf16 => {
                    return avx2
                        && has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512vl")
                        && has!("avx512vnni")
                        && (self == Isa::Avx512Vnni || has!("avx512bf16"))
                }
                _ => {}
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected as has;
            let dotprod = has!("neon") && has!("dotprod");
            match self {
                Isa::Neon => return has!("neon"),
                Isa::NeonDotprod => return dotprod,
                Isa::NeonBf16 => return dotprod && has!("bf16"),
                _ => {}
            }
        }
        self == Isa::Plain
    }

    /// Every level this CPU can run, lowest first (what the agreement tests iterate over).
    pub fn available() -> Vec<Isa> {
        LADDER.iter().copied().filter(|i| i.supported()).collect()
    }

    /// Whether the level is built on the AVX2 kernels (`Avx2`, and `AvxVnni` and
    /// `Avx512Vnni`, which replace its quantised and, at `Avx512Vnni`, packed products):
    /// x widened to f32 for the packed products, AVX2 for the bf16 row tiles.
    pub fn is_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni)
    }

    /// Short name, as `JANUS_KERNELS` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Plain => "plain",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avx-vnni",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Avx512Bf16 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
            Isa::NeonBf16 => "neon-bf16",
        }
    }

    /// The level [`Self::name`] gives `name`, on any architecture.
    pub fn from_name(name: &str) -> Option<Isa> {
        [
            Isa::Plain,
            Isa::Avx2,
            Isa::AvxVnni,
            Isa::Avx512Vnni,
            Isa::Avx512Bf16,
            Isa::Neon,
            Isa::NeonDotprod,
            Isa::NeonBf16,
        ]
        .into_iter()
        .find(|i| i.name() == name)
    }
}

/// The levels this architecture has kernels for, lowest first (see [`Isa`] for what
/// each needs).
#[cfg(target_arch = "x86_64")]
const LADDER: &[Isa] = &[
    Isa::Plain,
    Isa::Avx2,
    Isa::AvxVnni,
    Isa::Avx512Vnni,
    Isa::Avx512Bf16,
];
/// The levels this architecture has kernels for, lowest first; each implies the ones
/// before it.
#[cfg(target_arch = "aarch64")]
const LADDER: &[Isa] = &[Isa::Plain, Isa::Neon, Isa::NeonDotprod, Isa::NeonBf16];
/// The levels this architecture has kernels for: the plain one.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LADDER: &[Isa] = &[Isa::Plain];

/// The level the kernels use: the CPU's best, or `JANUS_KERNELS` when it names one of
/// [`Isa::available`]. Read once.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::detect();
        let Ok(want) = std::env::var("JANUS_KERNELS") else {
            return best;
        };
        let Some(wanted) = Isa::from_name(&want) else {
            let names: Vec<&str> = LADDER.iter().map(|i| i.name()).collect();
            tracing::warn!(
                "JANUS_KERNELS={want} is not one of {}; using {}",
                names.join("|"),
                best.name()
            );
            return best;
        };
        // Levels of the other architecture are not below this one's: not available.
        if !Isa::available().contains(&wanted) {
            tracing::warn!(
                "JANUS_KERNELS={want}: this CPU lacks it; using {}",
                best.name()
            );
            best
        } else {
            wanted
        }
    })
}

/// Whether the CPU is AMD's (CPUID's vendor string "AuthenticAMD"), for the tuning that
/// was measured to differ by vendor.
#[cfg(target_arch = "x86_64")]
pub(crate) fn cpu_is_amd() -> bool {
    let id = std::arch::x86_64::__cpuid(0);
    [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6E65, 0x444D_4163]
}

thread_local! {
    /// Whether products on this thread must give each row the bits it gets alone.
    static ROW_INVARIANT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with (when `on`) products that give every row of their input the same bits
/// whatever rows come with it, on this thread: routes chosen by the row count that would
/// compute differently are skipped (Q8 through bf16 panels from [`quant::DEQUANT_ROWS`]
/// rows; quantised products over K blocks from 3 rows). Decoding a block of speculative drafts and decoding one code at a time then
/// agree exactly.
pub fn with_row_invariance<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ROW_INVARIANT.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(ROW_INVARIANT.with(|r| r.replace(on)));
    f()
}

/// Whether this thread is inside [`with_row_invariance`]`(true, ..)`.
pub fn row_invariance() -> bool {
    ROW_INVARIANT.with(std::cell::Cell::get)
}

/// Runs `f` on a thread of rayon's global pool (directly when already on one) and waits.
/// Work whose many parallel loops are separated by short serial steps (a model's
/// forward) should run this way: each loop then starts from a pool thread, instead of
/// the calling thread handing it over and sleeping until the pool is done, every time.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// [`on_pool`], with the pool's other threads kept awake while `f` runs: each takes part
/// through a task that runs whatever work appears (`rayon::yield_now`) and spins between,
/// until `f` returns. A parallel loop's halves are then taken up at once instead of after
/// a futex wake-up (tens of microseconds in a VM; an image step has about a hundred
/// loops of well under a millisecond each). The cost is the spinning: `f`'s serial parts
/// keep every pool thread busy, and long loops (SigLIP) ran slower this way
/// (docs/kernels.md), so it is for forwards of a few rows. The spinning tasks are not waited for: one that
/// picked up other work (another caller's forward) finishes it after `f` has returned.
pub fn on_pool_spinning<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    thread_local! {
        /// How many `on_pool_spinning` bodies this thread is inside.
        static BODIES: Cell<usize> = const { Cell::new(0) };
    }
    /// Ends the spinning and leaves the body however `f` leaves (a panic included).
    struct Leave(Arc<AtomicBool>);
    impl Drop for Leave {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            BODIES.with(|b| b.set(b.get() - 1));
        }
    }
    rayon::scope(|_| {
        let stop = Arc::new(AtomicBool::new(false));
        let spin = stop.clone();
        rayon::spawn_broadcast(move |_| {
            // A thread inside a body (this one's, waiting in a join, or another call's)
            // does not spin: two bodies' threads spinning for each other, each below the
            // other's body on its stack, would wait for ever.
            if BODIES.with(Cell::get) > 0 {
                return;
            }
            // Nor does a thread that is waiting in a join of a task it took up: the
            // spinner would sit on top of that task, whose caller (possibly the body)
            // cannot go on until the spinner returns. Such a spinner finds no work, so
            // it gives up after `SPIN_IDLE` without any (gaps between the loops of a
            // step are tens of microseconds).
            let mut idle_since = std::time::Instant::now();
            while !spin.load(Ordering::Acquire) {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    idle_since = std::time::Instant::now();
                } else if idle_since.elapsed() > SPIN_IDLE {
                    return;
                } else {
                    for _ in 0..64 {
                        std::hint::spin_loop();
                    }
                }
            }
        });
        BODIES.with(|b| b.set(b.get() + 1));
        let _leave = Leave(stop);
        f()
    })
}

/// How long a spinning pool thread (see [`on_pool_spinning`]) waits for work before it
/// leaves.
const SPIN_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Splits `0..n` into about `4 * threads` chunks of a multiple of `align` (the last may
/// be shorter), for rayon work lists that balance without tiny tasks.
pub(crate) fn chunk_len(n: usize, align: usize, min_chunk: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let target = n.div_ceil(4 * threads).max(min_chunk).max(1);
    target.div_ceil(align) * align
}

/// A vector of `len` values that `fill` writes, not zeroed first (a product's output:
/// zeroing tens of megabytes before the kernel overwrites them cost 2-3 % of a prefill).
///
/// # Safety
/// `fill(ptr)` writes every one of the `len` values at `ptr` (it may read one only after
/// writing it).
pub(crate) unsafe fn filled_by<T: Copy>(len: usize, fill: impl FnOnce(*mut T)) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(v.as_mut_ptr());
    v.set_len(len);
    v
}

/// Runs `f(i)` for every `i` in `0..n` on the pool's threads, each taking the next index
/// as it finishes one (an atomic counter), so all finish within one item of each other.
/// For streams of many short, equal items (a decoding product's weight slices): rayon's
/// splitting of a range hands each thread a fixed half up front, and a thread that starts
/// late or runs slower holds the other one idle at the end.
pub(crate) fn par_claim(n: usize, f: impl Fn(usize) + Sync) {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = rayon::current_num_threads().min(n);
    if threads <= 1 {
        return (0..n).for_each(f);
    }
    let next = AtomicUsize::new(0);
    (0..threads).into_par_iter().for_each(|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    });
}

/// Items of a [`par_claim`] work list over `n` units (at least `min_len`): 16 per thread,
/// so the last one to finish is short.
pub(crate) fn claim_len(n: usize, min_len: usize) -> usize {
    n.div_ceil(16 * rayon::current_num_threads())
        .max(min_len)
        .max(1)
}

/// A raw output pointer that rayon tasks share, each writing its own disjoint elements
/// (rows, columns or pixel ranges) of a buffer that outlives the parallel loop.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: the kernels only write disjoint elements through it, and only while the buffer
// is borrowed mutably by the calling function.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as for Send: shared between threads only to write disjoint elements.
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Makes glibc's allocator serve blocks up to 64 MiB from its heap and keep up to
/// 256 MiB of freed memory for reuse (Linux with glibc; a no-op elsewhere). By default
/// every allocation above 32 MiB is a fresh `mmap` whose pages fault in zeroed on first
/// touch and go back to the kernel on free: the VQ decoder's activations at 384x384
/// (38 MB each) paid that on every layer, 6-7 % of its time. Process-wide, so for
/// binaries, not for the library's own use, and best called after the model is loaded
/// (the CLI does), so loading's temporaries still go back at once. Measured on the 1B:
/// peak RSS 1.11x the checkpoint in bf16 (1.09x without), q8 1.16x (unchanged); keeping
/// every freed block instead (no thresholds) raised them to 1.13x and 1.24x.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (glibc serialises it with
    // allocation); no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Allocator settings for training, called before the model loads: one arena, freed
/// memory kept for reuse (no trimming), blocks up to glibc's largest mmap threshold
/// (32 MiB) from the heap. A training step frees and reallocates gigabytes of
/// activations; with an arena per thread one step's freed blocks went unused by the next
/// (measured in docs/training.md). Process-wide, for binaries.
pub fn tune_allocator_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (glibc serialises it with
    // allocation); no memory is touched.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // -1: never trim. Any positive value caps at 2 GiB, less than one step frees.
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

/// A vector of `len` copies of `value` backed by transparent huge pages where the kernel allows it
/// (Linux with THP in `madvise` or `always` mode; plain pages elsewhere). Streaming
/// gigabytes of weights per token through 4 KiB pages costs a TLB walk every 4 KiB and
/// stops the hardware prefetchers at every page boundary. Filled by rayon's threads (see
/// [`huge_filled_with`]).
pub(crate) fn huge_filled<T: Clone + Send + Sync>(len: usize, value: T) -> Vec<T> {
    let fill = |_: usize, out: &mut [std::mem::MaybeUninit<T>]| {
        for v in out {
            v.write(value.clone());
        }
    };
    // SAFETY: `fill` writes every value of its chunk. Chunks of 1 MiB or so.
    unsafe { huge_filled_with(len, fill, (1 << 20) / std::mem::size_of::<T>().max(1)) }
}

/// [`huge_filled`] with the values written by `fill(start, chunk)` on rayon's threads,
/// for chunks of `chunk` values (the last one shorter) starting at `start`. The pages are
/// first touched by the threads that fill them, so the kernel's zeroing of fresh pages is
/// spread over the pool as well.
///
/// # Safety
/// `fill` writes every value of the chunk it is given.
pub(crate) unsafe fn huge_filled_with<T: Send>(
    len: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync,
    chunk: usize,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = huge_capacity(len);
    let chunk = chunk.max(1);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, out)| fill(i * chunk, out));
    // SAFETY: `fill` wrote each of the `len` values (its contract).
    unsafe { v.set_len(len) };
    v
}

/// An empty vector with room for `len` values, backed by transparent huge pages where the
/// kernel allows it (see [`huge_filled`]).
fn huge_capacity<T>(len: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let base = v.as_ptr() as usize;
        let start = base.next_multiple_of(HUGE);
        let end = (base + len * std::mem::size_of::<T>()) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the (untouched) allocation; MADV_HUGEPAGE
            // changes no contents, only how the first writes below are backed.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// bf16 to f32 (exact), written so loops over it vectorise.
#[inline(always)]
pub(crate) fn widen(v: half::bf16) -> f32 {
    f32::from_bits(u32::from(v.to_bits()) << 16)
}

/// f32 to bf16, rounding to nearest even with NaNs kept (quieted): the same bits as
/// `bf16::from_f32` (and PyTorch's conversion), but branch-free, so loops over it
/// vectorise where `half`'s scalar conversion does not.
#[inline(always)]
pub(crate) fn narrow(x: f32) -> half::bf16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let nan = (b >> 16) | 0x40;
    half::bf16::from_bits(if b & 0x7fff_ffff > 0x7f80_0000 {
        nan
    } else {
        rounded
    } as u16)
}

/// Defines `fn NAME(isa: Isa, ARGS..)` whose body is compiled once per vector level
/// (AVX-512, AVX2 + FMA, baseline) and dispatched on `isa`, so plain loops in it
/// (conversions, elementwise maps) vectorise at the widest width the CPU has. The body is
/// an `#[inline(always)]` function of the same arguments, so it is inlined into each
/// target-feature copy whatever the codegen-unit split (closures are not reliably).
/// Results are the same at every level: no reassociation, no contraction.
macro_rules! vectorized_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($isa:ident: Isa $(, $arg:ident: $ty:ty)* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name($isa: $crate::kernels::Isa $(, $arg: $ty)*) {
            #[inline(always)]
            #[allow(unused_variables, clippy::too_many_arguments)]
            fn body($isa: $crate::kernels::Isa $(, $arg: $ty)*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($isa: $crate::kernels::Isa $(, $arg: $ty)*) {
                body($isa $(, $arg)*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($isa: $crate::kernels::Isa $(, $arg: $ty)*) {
                body($isa $(, $arg)*)
            }
            match $isa {
                // SAFETY: `isa` is only ever a level this CPU has (`Isa::available`).
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx512Bf16 | $crate::kernels::Isa::Avx512Vnni => unsafe {
                    avx512($isa $(, $arg)*)
                },
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::Isa::Avx2 | $crate::kernels::Isa::AvxVnni => {
                    // SAFETY: as above.
                    unsafe { avx2($isa $(, $arg)*) }
                }
                _ => body($isa $(, $arg)*),
            }
        }
    };
}
pub(crate) use vectorized_fn;

#[cfg(test)]
mod tests {
    use half::bf16;
    use rayon::prelude::*;

    use super::Isa;

    #[test]
    fn levels_name_themselves_and_the_available_ones_climb_from_plain() {
        let all = [
            Isa::Plain,
            Isa::Avx2,
            Isa::AvxVnni,
            Isa::Avx512Vnni,
            Isa::Avx512Bf16,
            Isa::Neon,
            Isa::NeonDotprod,
            Isa::NeonBf16,
        ];
        for isa in all {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse2"), None);
        let available = Isa::available();
        assert_eq!(available.first(), Some(&Isa::Plain));
        assert!(available.windows(2).all(|w| w[0] < w[1]), "{available:?}");
        assert_eq!(available.last(), Some(&Isa::detect()));
        assert!(available.contains(&super::isa()));
    }

    /// CPUID's vendor agrees with the kernel's `vendor_id` (the vendor-tuned prefetch
    /// must not land on the wrong CPUs).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn cpu_vendor_matches_proc_cpuinfo() {
        let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
        let vendor = info
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id")?.split(':').nth(1))
            .expect("a vendor_id line")
            .trim();
        assert_eq!(
            super::cpu_is_amd(),
            vendor == "AuthenticAMD",
            "vendor {vendor}"
        );
    }

    /// The emulated runs of `scripts/arm/test-qemu.sh` name the level their emulated CPU
    /// must be detected at (`JANUS_EXPECT_DETECTED`); the level they force through
    /// `JANUS_KERNELS` must then be the one in use. Without that variable (native runs)
    /// there is nothing to check.
    #[test]
    fn detection_and_forcing_give_the_levels_the_runner_expects() {
        let Ok(detected) = std::env::var("JANUS_EXPECT_DETECTED") else {
            return;
        };
        assert_eq!(Isa::detect().name(), detected, "detected level");
        if let Ok(forced) = std::env::var("JANUS_KERNELS") {
            assert_eq!(super::isa().name(), forced, "level in use");
        }
    }

    #[test]
    fn claimed_work_runs_every_item_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for n in [0, 1, 2, 3, 17, 1000] {
            let runs: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            super::par_claim(n, |i| {
                runs[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
            // Inside a spinning forward too (a pool thread's nested loop).
            let total = AtomicUsize::new(0);
            super::on_pool_spinning(|| {
                super::par_claim(n, |i| {
                    total.fetch_add(i, Ordering::Relaxed);
                })
            });
            assert_eq!(total.into_inner(), n * n.saturating_sub(1) / 2);
        }
        assert_eq!(super::claim_len(0, 0), 1);
        assert!(super::claim_len(1000, 4) >= 4);
    }

    #[test]
    fn spinning_pool_runs_parallel_loops_nests_and_passes_panics_on() {
        // Run from outside the pool, with parallel loops inside, nested, and from many
        // threads at once (each call's spinners must stop when it returns).
        let sums: Vec<u64> = (0..4u64)
            .into_par_iter()
            .map(|t| {
                super::on_pool_spinning(|| {
                    let inner =
                        super::on_pool_spinning(|| (0..1000u64).into_par_iter().sum::<u64>());
                    inner + (0..1000u64).into_par_iter().map(|i| i * t).sum::<u64>()
                })
            })
            .collect();
        assert_eq!(sums, [499_500, 999_000, 1_498_500, 1_998_000]);
        let outside = std::thread::spawn(|| super::on_pool_spinning(|| 7))
            .join()
            .unwrap();
        assert_eq!(outside, 7);
        // A panic reaches the caller instead of leaving the spinners waiting forever.
        let caught = std::panic::catch_unwind(|| {
            super::on_pool_spinning(|| {
                (0..100)
                    .into_par_iter()
                    .for_each(|i| assert!(i < 50, "item {i}"));
            })
        });
        assert!(caught.is_err());
        assert_eq!(super::on_pool_spinning(|| 3), 3);
    }

    #[test]
    fn narrow_and_widen_match_half() {
        let mut specials = vec![
            0.0f32,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            f32::from_bits(0x3f80_8000), // a tie, rounds to even (down)
            f32::from_bits(0x3f81_8000), // a tie, rounds to even (up)
            f32::from_bits(0x7f7f_ffff),
        ];
        let mut s = 0x1234_5678u32;
        for _ in 0..100_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            specials.push(f32::from_bits(s));
        }
        for x in specials {
            let want = bf16::from_f32(x);
            let got = super::narrow(x);
            assert_eq!(got.to_bits(), want.to_bits(), "{x:e} ({:#x})", x.to_bits());
            assert_eq!(super::widen(got).to_bits(), want.to_f32().to_bits());
        }
    }
}
