// What AMX tiles reach on this CPU, outside the crate: the same 2x2 tile loop as
// crates/janus/src/kernels/packed/amx.rs (two A tiles, two B tiles, four C tiles), in C.
// The numbers behind docs/kernels.md, "AMX tiles".
//
//   gcc -O2 -mamx-tile -mamx-bf16 -o /tmp/amx_probe scripts/bench/amx_probe.c
//   /tmp/amx_probe peak                      # TDPBF16PS alone, and with L1 tile loads
//   /tmp/amx_probe product M N K GROUP [A_OFF B_OFF]
//
// `product` runs an M x N x K bf16 product on one thread, rows in groups of GROUP row
// blocks of 32 (groups outermost, panel pairs inside), x's rows an odd number of tiles
// apart, the weights in panel order; A_OFF / B_OFF shift x / the weights that many bytes
// off a cache line. Values are small non-zero bf16 numbers (all-zero data runs faster).
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    uint8_t palette, start, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) tile_config;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void configure(void) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    _tile_loadconfig(&c);
}

static void fill(uint16_t *p, long n, long seed) {
    for (long i = 0; i < n; i++) {
        float f = ((i * seed) % 1000) / 500.0f - 1.0f;
        uint32_t u;
        memcpy(&u, &f, 4);
        p[i] = u >> 16;
    }
}

static void peak(void) {
    static char a[2][1024] __attribute__((aligned(64))), b[2][1024] __attribute__((aligned(64)));
    fill((uint16_t *)a, 1024, 7919);
    fill((uint16_t *)b, 1024, 7907);
    configure();
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    _tile_loadd(4, a[0], 64); _tile_loadd(5, a[1], 64);
    _tile_loadd(6, b[0], 64); _tile_loadd(7, b[1], 64);
    long n = 20000000;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    double dt = now() - t0;
    printf("TDPBF16PS alone: %.2f ns each, %.0f GFLOP/s\n", dt / (4.0 * n) * 1e9,
           4.0 * n * 16384 / dt / 1e9);
    n = 5000000;
    t0 = now();
    for (long i = 0; i < n; i++) {
        _tile_loadd(4, a[0], 64); _tile_loadd(6, b[0], 64); _tile_loadd(7, b[1], 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(5, a[1], 64);
        _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    dt = now() - t0;
    printf("with four tile loads from L1: %.2f ns each, %.0f GFLOP/s\n",
           dt / (4.0 * n) * 1e9, 4.0 * n * 16384 / dt / 1e9);
    _tile_release();
}

static void product(int m, int n, int k, int group, int a_off, int b_off) {
    int ktiles = k / 32, blocks = (m + 31) / 32, pairs = n / 32;
    long stride = (long)((ktiles | 1) * 32) * 2; // bytes between rows: odd tiles
    long panel = (long)ktiles * 1024;            // bytes of one 16-row panel
    char *a = (char *)aligned_alloc(4096, blocks * 32 * stride + 4096) + a_off;
    char *b = (char *)aligned_alloc(4096, n / 16 * panel + 4096) + b_off;
    float *out = aligned_alloc(4096, (long)blocks * 32 * n * 4);
    fill((uint16_t *)a, blocks * 32 * stride / 2, 7919);
    fill((uint16_t *)b, n / 16 * panel / 2, 7907);
    memset(out, 0, (long)blocks * 32 * n * 4);
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (int g = 0; g * group < blocks; g++)
            for (int pp = 0; pp < pairs; pp++)
                for (int rb = g * group; rb < (g + 1) * group && rb < blocks; rb++) {
                    configure();
                    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
                    char *a0 = a + rb * 32 * stride, *b0 = b + 2L * pp * panel;
                    for (int t = 0; t < ktiles; t++) {
                        _tile_loadd(4, a0 + t * 64, stride);
                        _tile_loadd(6, b0 + t * 1024L, 64);
                        _tile_loadd(7, b0 + panel + t * 1024L, 64);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_loadd(5, a0 + 16 * stride + t * 64, stride);
                        _tile_dpbf16ps(1, 4, 7);
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                    float *o = out + (long)rb * 32 * n + pp * 32;
                    _tile_stored(0, o, n * 4); _tile_stored(1, o + 16, n * 4);
                    _tile_stored(2, o + 16 * n, n * 4); _tile_stored(3, o + 16 * n + 16, n * 4);
                    _tile_release();
                }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    printf("%dx%dx%d, groups of %d row blocks, x +%d, weights +%d bytes: %.0f GFLOP/s (best of 5)\n",
           m, n, k, group, a_off, b_off, 2.0 * m * n * k / best / 1e9);
}

int main(int argc, char **argv) {
    // Linux grants the tile state on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
    if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
        fprintf(stderr, "no AMX tile state granted here\n");
        return 1;
    }
    if (argc >= 2 && !strcmp(argv[1], "peak")) {
        peak();
    } else if (argc >= 6 && !strcmp(argv[1], "product")) {
        product(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]),
                argc > 6 ? atoi(argv[6]) : 0, argc > 7 ? atoi(argv[7]) : 0);
    } else {
        fprintf(stderr, "usage: %s peak | product M N K GROUP [A_OFF B_OFF]\n", argv[0]);
        return 2;
    }
    return 0;
}
