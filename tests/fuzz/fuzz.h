/*
 * fuzz.h — what every fuzz target in tests/fuzz/ shares (header only).
 *
 * Each fuzz_<x>.c defines LLVMFuzzerTestOneInput() and is linked either with
 * libFuzzer (-DWP_FUZZ=ON, clang) or with replay_main.c, a deterministic
 * driver that runs the seed corpus plus generated mutations of it. A target
 * checks invariants, not only "does not crash": WP_FUZZ_CHECK() prints the
 * failed expression and aborts, which both drivers report as a crash.
 */
#ifndef WP_FUZZ_H
#define WP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/*
 * The libFuzzer entry point: runs one input of size bytes (data may point at
 * size bytes only: reading past them is a bug ASan reports). Returns 0.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts the process (a crash for libFuzzer and the replay driver) if cond is false. */
#define WP_FUZZ_CHECK(cond)                                                                        \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant violated: %s\n", __FILE__, __LINE__, #cond);    \
            fflush(stderr);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
