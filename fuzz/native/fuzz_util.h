/* Shared by the native harnesses: reading parameters off the fuzz input, and
 * a check that fails loudly.  Header-only, plain C. */
#ifndef TCPFRAME_FUZZ_UTIL_H
#define TCPFRAME_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* An invariant of the core did not hold: say which, and abort() so that
 * libFuzzer saves the input as crash-<sha1> (and ASan prints the stack). */
#define REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "\n*** invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    abort(); } } while (0)

/* For the harness's own bookkeeping (byte loops, invariant checks): left out
 * of libFuzzer's coverage and comparison tracing, which gives the fuzzer
 * nothing to learn there and, traced, took most of the time.  noinline: the
 * attribute does not survive inlining into a traced caller. */
#define NOT_TRACED __attribute__((no_sanitize("coverage"), noinline))

/* Pointer checks, untraced: an address that reached libFuzzer's comparison
 * tables would make the run depend on where things were allocated (which
 * shifts with, say, the length of the corpus path). */
NOT_TRACED static inline int
same_address(const void *a, const void *b)
{
    return a == b;
}

/* Is [p, p + n) inside [lo, lo + cap)? */
NOT_TRACED static inline int
inside(const void *p, size_t n, const void *lo, size_t cap)
{
    const char *c = p, *l = lo;
    return c >= l && c <= l + cap && n <= (size_t)(l + cap - c);
}

/* The input read front to back; reading past its end gives zeros, so every
 * input, even an empty one, is a complete test. */
typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} fuzz_input;

static inline uint8_t
take_u8(fuzz_input *in)
{
    return in->pos < in->size ? in->data[in->pos++] : 0;
}

static inline uint16_t
take_u16(fuzz_input *in)
{
    uint16_t lo = take_u8(in);
    return (uint16_t)(lo | (uint16_t)take_u8(in) << 8);
}

static inline uint32_t
take_u32(fuzz_input *in)
{
    uint32_t lo = take_u16(in);
    return lo | (uint32_t)take_u16(in) << 16;
}

static inline uint64_t
take_u64(fuzz_input *in)
{
    uint64_t lo = take_u32(in);
    return lo | (uint64_t)take_u32(in) << 32;
}

static inline size_t
left_in(const fuzz_input *in)
{
    return in->size - in->pos;
}

#endif
