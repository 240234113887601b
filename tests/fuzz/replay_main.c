/*
 * replay_main.c — a deterministic stand-in for libFuzzer's driver (WP_FUZZ=OFF builds).
 *
 * Linked with one fuzz_<x>.c, it calls LLVMFuzzerTestOneInput() on every
 * file given (directories: every regular file in them, in name order), on
 * the empty input, and then on a fixed number of inputs generated from those
 * files with a fixed-seed PRNG: bit flips, byte sets, arithmetic on bytes
 * and big-endian length fields, truncations, deletions, insertions of random
 * bytes and of protocol tokens, duplications of ranges and splices with
 * another seed. The same binary and arguments always run the same inputs, so
 * a failure found by ctest reproduces exactly; a crash reproduces from its
 * saved file alone (`fuzz_x crash.bin -n 0`).
 *
 * Usage: fuzz_<x> [-n MUTATIONS] [-s SEED] [-v] PATH...
 * Every input is passed in a heap block of exactly its size, so ASan sees any
 * read past the end. A target reports a broken invariant by aborting; if the
 * process survives, it prints "<n> passed, 0 failed" (like tests/unit/wp_test.h).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "fuzz.h"

#define REPLAY_MAX_FILE  (1024u * 1024u) /* largest seed file accepted */
#define REPLAY_MAX_SEEDS 4096u           /* seed files per run */
#define REPLAY_MIN_CAP   4096u           /* generated inputs may grow to this at least */
#define REPLAY_MAX_CAP   (256u * 1024u)  /* ... and never beyond this */

typedef struct seed {
    char *name;
    uint8_t *data;
    size_t len;
} seed;

static seed seeds[REPLAY_MAX_SEEDS];
static size_t nseeds;
static unsigned long passed, failed;
static int verbose;

/* splitmix64: small, fast, and the same sequence on every platform. */
static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform-enough value in [0, n); n > 0. */
static size_t rng_below(size_t n)
{
    return (size_t)(rng_next() % n);
}

static int load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX_FILE + 1, f) : 0;
    int bad = !buf || ferror(f) || n > REPLAY_MAX_FILE;
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: %s: unreadable or larger than %u bytes\n", path, REPLAY_MAX_FILE);
        free(buf);
        return -1;
    }
    if (nseeds >= REPLAY_MAX_SEEDS) {
        fprintf(stderr, "replay: more than %u seed files\n", REPLAY_MAX_SEEDS);
        free(buf);
        return -1;
    }
    seeds[nseeds].name = strdup(path);
    seeds[nseeds].data = buf;
    seeds[nseeds].len = n;
    if (!seeds[nseeds].name) {
        free(buf);
        return -1;
    }
    nseeds++;
    return 0;
}

static int skip_entry(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

static int load_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return load_file(path);
    struct dirent **list = NULL;
    int n = scandir(path, &list, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", path, list[i]->d_name);
        if (rc == 0 && stat(full, &st) == 0 && S_ISREG(st.st_mode))
            rc = load_file(full);
        free(list[i]);
    }
    free(list);
    return rc;
}

/* Runs one input from an exact-size heap copy (ASan catches any overread). */
static void run_one(const uint8_t *p, size_t n, const char *what)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy) {
        fprintf(stderr, "replay: out of memory\n");
        exit(2);
    }
    if (n)
        memcpy(copy, p, n);
    if (verbose) {
        fprintf(stderr, "replay: %s (%zu bytes)\n", what, n);
        fflush(stderr);
    }
    int rc = LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    if (rc == 0) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s: returned %d\n", what, rc);
    }
}

/* Tokens that matter to the parsers under test; inserted or overwritten whole. */
static const char *const tokens[] = {"\r\n",
                                     "\r\n\r\n",
                                     "\n",
                                     " ",
                                     ":",
                                     "/",
                                     "%",
                                     "%00",
                                     "%2f",
                                     "%2e%2e",
                                     "..",
                                     "?",
                                     "#",
                                     "{",
                                     "}",
                                     "[",
                                     "]",
                                     "\"",
                                     "\\",
                                     "\\u0000",
                                     "\\ud800",
                                     ",",
                                     "0",
                                     "-1",
                                     "1e999",
                                     "chunked",
                                     "0\r\n\r\n",
                                     "ffffffff",
                                     "HTTP/1.0",
                                     "HTTP/1.1",
                                     "Host: a\r\n",
                                     "Content-Length: ",
                                     "Transfer-Encoding: chunked\r\n",
                                     "Expect: 100-continue\r\n",
                                     "Connection: close\r\n",
                                     "Upgrade: websocket\r\n",
                                     "\xff\xff\xff\xff",
                                     "\x00\x00",
                                     "\x7f",
                                     "\xc0\x80",
                                     "\xed\xa0\x80",
                                     "\xf4\x90\x80\x80",
                                     "sha256:",
                                     "[::1]",
                                     ":65535",
                                     ":65536",
                                     "localhost",
                                     "\x16\x03\x01",
                                     "\x16\x03\x03",
                                     "\x00\x0c"};

static const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x0f, 0x10, 0x20, 0x3f, 0x40,
                                      0x7f, 0x80, 0xc0, 0xfe, 0xff, '\r', '\n', '0',  '9',  'a'};

/* Applies one random mutation to buf[0..*len) (capacity cap). */
static void mutate_once(uint8_t *buf, size_t *len, size_t cap)
{
    size_t n = *len;
    switch (rng_below(12)) {
    case 0: /* flip a bit */
        if (n)
            buf[rng_below(n)] ^= (uint8_t)(1u << rng_below(8));
        break;
    case 1: /* random byte */
        if (n)
            buf[rng_below(n)] = (uint8_t)rng_next();
        break;
    case 2: /* interesting byte */
        if (n)
            buf[rng_below(n)] = interesting[rng_below(sizeof(interesting))];
        break;
    case 3: { /* small arithmetic on a byte, or on a big-endian u16/u32 (length fields) */
        if (!n)
            break;
        size_t at = rng_below(n);
        size_t w = (size_t)1 << rng_below(3); /* 1, 2 or 4 bytes */
        if (at + w > n)
            w = 1;
        uint32_t v = 0;
        for (size_t i = 0; i < w; i++)
            v = (v << 8) | buf[at + i];
        v += (uint32_t)((int32_t)rng_below(33) - 16);
        for (size_t i = w; i-- > 0; v >>= 8)
            buf[at + i] = (uint8_t)v;
        break;
    }
    case 4: /* truncate */
        if (n)
            *len = rng_below(n);
        break;
    case 5: { /* delete a range */
        if (!n)
            break;
        size_t at = rng_below(n), k = 1 + rng_below(n - at < 32 ? n - at : 32);
        memmove(buf + at, buf + at + k, n - at - k);
        *len = n - k;
        break;
    }
    case 6: { /* insert random bytes */
        size_t k = 1 + rng_below(16);
        if (n + k > cap)
            break;
        size_t at = rng_below(n + 1);
        memmove(buf + at + k, buf + at, n - at);
        for (size_t i = 0; i < k; i++)
            buf[at + i] = (uint8_t)rng_next();
        *len = n + k;
        break;
    }
    case 7: { /* duplicate a range (repeated headers, frames, chunks) */
        if (!n)
            break;
        size_t from = rng_below(n), k = 1 + rng_below(n - from);
        if (n + k > cap)
            break;
        size_t at = rng_below(n + 1);
        uint8_t *tmp = malloc(k);
        if (!tmp)
            break;
        memcpy(tmp, buf + from, k);
        memmove(buf + at + k, buf + at, n - at);
        memcpy(buf + at, tmp, k);
        free(tmp);
        *len = n + k;
        break;
    }
    case 8: { /* splice: our prefix + another seed's suffix */
        const seed *o = &seeds[rng_below(nseeds)];
        size_t keep = rng_below(n + 1);
        size_t from = rng_below(o->len + 1);
        size_t k = o->len - from;
        if (keep + k > cap)
            k = cap - keep;
        memcpy(buf + keep, o->data + from, k);
        *len = keep + k;
        break;
    }
    case 9: { /* overwrite a range with a range of another seed */
        const seed *o = &seeds[rng_below(nseeds)];
        if (!n || !o->len)
            break;
        size_t at = rng_below(n), from = rng_below(o->len);
        size_t k = 1 + rng_below(o->len - from);
        if (k > n - at)
            k = n - at;
        memcpy(buf + at, o->data + from, k);
        break;
    }
    case 10: { /* insert a token */
        const char *t = tokens[rng_below(sizeof(tokens) / sizeof(tokens[0]))];
        size_t k = strlen(t);
        if (k == 0) /* "\x00\x00" reads as empty: insert two NULs */
            k = 2;
        if (n + k > cap)
            break;
        size_t at = rng_below(n + 1);
        memmove(buf + at + k, buf + at, n - at);
        memcpy(buf + at, t, k);
        *len = n + k;
        break;
    }
    default: { /* overwrite with a token */
        const char *t = tokens[rng_below(sizeof(tokens) / sizeof(tokens[0]))];
        size_t k = strlen(t);
        if (!n || k == 0)
            break;
        size_t at = rng_below(n);
        if (k > n - at)
            k = n - at;
        memcpy(buf + at, t, k);
        break;
    }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: fuzz_<x> [-n MUTATIONS] [-s SEED] [-v] PATH...\n");
}

int main(int argc, char **argv)
{
    unsigned long mutations = 20000;
    uint64_t seed_value = 0x5eed5eedull;
    int npaths = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            mutations = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
            seed_value = strtoull(argv[++i], NULL, 0);
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else if (argv[i][0] == '-') {
            usage();
            return 2;
        } else {
            if (load_path(argv[i]) != 0)
                return 2;
            npaths++;
        }
    }
    if (npaths == 0 || nseeds == 0) {
        usage();
        fprintf(stderr, "replay: no input files\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    static const uint8_t empty[1];
    run_one(empty, 0, "empty input");
    size_t maxlen = 0;
    for (size_t i = 0; i < nseeds; i++) {
        run_one(seeds[i].data, seeds[i].len, seeds[i].name);
        if (seeds[i].len > maxlen)
            maxlen = seeds[i].len;
    }

    size_t cap = 2 * maxlen + 64;
    if (cap < REPLAY_MIN_CAP)
        cap = REPLAY_MIN_CAP;
    if (cap > REPLAY_MAX_CAP)
        cap = REPLAY_MAX_CAP;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        fprintf(stderr, "replay: out of memory\n");
        return 2;
    }
    rng_state = seed_value;
    for (unsigned long m = 0; m < mutations; m++) {
        const seed *s = &seeds[rng_below(nseeds)];
        size_t len = s->len < cap ? s->len : cap;
        memcpy(buf, s->data, len);
        size_t rounds = 1 + rng_below(4);
        for (size_t r = 0; r < rounds; r++)
            mutate_once(buf, &len, cap);
        char what[64];
        snprintf(what, sizeof(what), "generated input #%lu", m);
        run_one(buf, len, what);
    }
    free(buf);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("replay: %zu seed files + %lu generated inputs in %.2f s\n", nseeds, mutations, secs);
    for (size_t i = 0; i < nseeds; i++) {
        free(seeds[i].name);
        free(seeds[i].data);
    }
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
