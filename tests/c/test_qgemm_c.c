/* C-level test of every qgemm path this CPU runs (x86-64 natively, aarch64 under qemu-aarch64), against cases whose
 * expected outputs come from the NumPy twin (tests/c/gen_qgemm_cases.py). Build and run: scripts/test_arm_kernels.sh
 *
 *   test_qgemm_c CASES.bin        exit 0 if every case matches on every supported path, 1 otherwise
 *
 * For each case and path it packs w (and checks the bytes against the twin's packing), prepares the padded offset
 * and scale as the Cython wrapper does (+128 * colsum_b for paths that shift a), writes into a wider output buffer
 * (row stride N + 5) and compares, once as one tile and once split into 4 tiles (2 row blocks x 2 panel blocks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qgemm/qgemm.h"

static int failures = 0;

static void *xmalloc(size_t n) {
    void *p = calloc(1, n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static void *aligned(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64)) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static size_t read_exact(FILE *f, void *dst, size_t n) {
    if (fread(dst, 1, n, f) != n) { fprintf(stderr, "truncated case file\n"); exit(2); }
    return n;
}

/* The post-op (qgemm/post.h) on an f32 case: a hard swish chain with both outputs, through qgemm_post_tile split
 * into 2 x 2 tiles, must equal qd_chain_span applied to the twin's f32 output (the blocks and column offsets of
 * post.h on this path; the chain's arithmetic itself is checked against the NumPy twin in tests/test_qgemm.py). */
static void check_post(int ci, const qgemm_path *path, const qgemm_args *plain, const uint8_t *want_f32,
                       int *checked) {
    const ptrdiff_t M = plain->M, N = plain->N;
    const float k[7] = {0.75f, 0.25f, 3.0f, 6.0f, 6.0f, 1.25f, -0.5f};
    float *want_y = xmalloc(4 * (size_t)(M * N)), *y = xmalloc(4 * (size_t)(M * N));
    uint8_t *want_q = xmalloc((size_t)(M * N)), *q = xmalloc((size_t)(M * N));
    qd_chain_span((const float *)want_f32, M * N, k, 1, want_y, want_q, 0.37f, -127.0f, 127.0f, 128);
    qgemm_post post = {k, 1, y, N, q, N, 0.37f, -127.0f, 127.0f, 128};
    qgemm_args p = *plain;
    p.post = &post;
    ptrdiff_t mh = M / 2, nh = (p.Np / QGEMM_NR) / 2 * QGEMM_NR;
    if (nh > N) nh = N;
    ptrdiff_t ms[3] = {0, mh, M}, ns[3] = {0, nh, N};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (ms[i] < ms[i + 1] && ns[j] < ns[j + 1]) qgemm_post_tile(path->tile, &p, ms[i], ms[i + 1], ns[j], ns[j + 1]);
    if (memcmp(y, want_y, 4 * (size_t)(M * N)) || memcmp(q, want_q, (size_t)(M * N))) {
        printf("case %d (M=%td N=%td) path %s: post-op chain WRONG VALUES\n", ci, M, N, path->name);
        failures++;
    }
    (*checked)++;
    free(want_y); free(y); free(want_q); free(q);
}

static int run_case(int ci, FILE *f, const int *paths, int npaths, int *checked) {
    int32_t hi4[4];
    float fl[3];
    read_exact(f, hi4, 16);
    read_exact(f, fl, 12);
    ptrdiff_t M = hi4[0], K = hi4[1], N = hi4[2];
    int kind = hi4[3];
    size_t esz = kind <= QGEMM_OUT_F32 ? 4 : 1;
    ptrdiff_t Kp = qgemm_round_up(K, QGEMM_KG), Np = qgemm_round_up(N, QGEMM_NR);
    size_t pbytes = qgemm_packed_bytes(K, N);
    uint8_t *a = xmalloc((size_t)(M * K));
    int8_t *w = xmalloc((size_t)(K * N));
    int32_t *offset = xmalloc(4 * (size_t)N);
    float *scale = xmalloc(4 * (size_t)N);
    int8_t *twin_packed = xmalloc(pbytes), *packed = aligned(pbytes);
    uint8_t *want = xmalloc((size_t)(M * N) * esz);
    read_exact(f, a, (size_t)(M * K));
    read_exact(f, w, (size_t)(K * N));
    read_exact(f, offset, 4 * (size_t)N);
    read_exact(f, scale, 4 * (size_t)N);
    read_exact(f, twin_packed, pbytes);
    read_exact(f, want, (size_t)(M * N) * esz);

    qgemm_pack_b(w, K, N, N, packed);
    if (memcmp(packed, twin_packed, pbytes) != 0 || qgemm_check_header(packed, pbytes, K, N) != 0) {
        printf("case %d: packed bytes differ from the twin's\n", ci);
        failures++;
    }
    const int32_t *colsum_b = qgemm_colsum_b(packed, Kp, Np);
    float *scale_p = aligned(4 * (size_t)Np);
    int32_t *offset_p = aligned(4 * (size_t)Np);
    ptrdiff_t ldo = N + 5;
    uint8_t *out = aligned((size_t)(M * ldo) * esz);
    for (int pi = 0; pi < npaths; pi++) {
        const qgemm_path *path = &QGEMM_PATHS[paths[pi]];
        for (ptrdiff_t n = 0; n < Np; n++) {
            uint32_t o = n < N ? (uint32_t)offset[n] : 0;
            if (path->shifts_a) o += 128u * (uint32_t)colsum_b[n];
            offset_p[n] = (int32_t)o;
            scale_p[n] = n < N ? scale[n] : 0.0f;
        }
        qgemm_args p = {M, K, N, Kp, Np, a, K, packed + QGEMM_HEADER_BYTES, qgemm_header_flags(packed),
                        offset_p, scale_p, kind,
                        fl[0], fl[1], fl[2], out, ldo, NULL, NULL};
        for (int split = 0; split < 2; split++) {
            memset(out, 0xA5, (size_t)(M * ldo) * esz);
            if (!split) {
                path->tile(&p, 0, M, 0, N);
            } else {
                ptrdiff_t mh = M / 2, nh = (Np / QGEMM_NR) / 2 * QGEMM_NR;
                if (nh > N) nh = N;
                ptrdiff_t ms[3] = {0, mh, M}, ns[3] = {0, nh, N};
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++)
                        if (ms[i] < ms[i + 1] && ns[j] < ns[j + 1]) path->tile(&p, ms[i], ms[i + 1], ns[j], ns[j + 1]);
            }
            int bad = 0;
            for (ptrdiff_t m = 0; m < M && !bad; m++) {
                if (memcmp(out + (size_t)(m * ldo) * esz, want + (size_t)(m * N) * esz, (size_t)N * esz)) bad = 1;
                for (size_t b = (size_t)N * esz; b < (size_t)ldo * esz; b++)
                    if (out[(size_t)(m * ldo) * esz + b] != 0xA5) bad = 2;
            }
            if (bad) {
                printf("case %d (M=%td K=%td N=%td kind=%d) path %s%s: %s\n", ci, M, K, N, kind, path->name,
                       split ? " (4 tiles)" : "", bad == 1 ? "WRONG VALUES" : "wrote outside the output");
                failures++;
            }
            (*checked)++;
        }
        if (kind == QGEMM_OUT_F32) check_post(ci, path, &p, want, checked);
    }
    free(a); free(w); free(offset); free(scale); free(twin_packed); free(packed); free(want);
    free(scale_p); free(offset_p); free(out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s CASES.bin\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    char magic[8];
    int32_t count;
    read_exact(f, magic, 8);
    read_exact(f, &count, 4);
    if (memcmp(magic, "QGCASES1", 8)) { fprintf(stderr, "not a case file\n"); return 2; }
    int paths[16], npaths = 0;
    printf("paths:");
    for (int i = 0; i < QGEMM_NPATHS; i++) {
        int ok = qgemm_path_supported(i);
        printf(" %s%s", QGEMM_PATHS[i].name, ok ? "" : " (not supported by this CPU, skipped)");
        if (ok) paths[npaths++] = i;
    }
    printf("\n");
    int checked = 0;
    for (int ci = 0; ci < count; ci++) run_case(ci, f, paths, npaths, &checked);
    fclose(f);
    printf("%d cases x %d paths: %d checks, %d failures\n", count, npaths, checked, failures);
    return failures ? 1 : 0;
}
