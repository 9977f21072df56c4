/* libFuzzer harness for csrc/frame_header.c, the 8-digit header codec.
 *
 * Input: any bytes.  Checked, against a reference written here:
 *   - decode accepts exactly the 8-byte strings of ASCII digits '0'..'9'
 *     (no sign, space, underscore, NUL, non-ASCII digit), with the value
 *     strtoull gives; a refused header leaves *n untouched;
 *   - an accepted header re-encodes to the same 8 bytes (zero padding makes
 *     the encoding of a length unique);
 *   - encode takes every n <= TF_MAX_SIZE and writes "%08zu"; larger n is
 *     refused with the output untouched; encode then decode gives n back.
 * Every 8-byte window of the input is decoded, and lengths are taken from
 * the input both raw (any size_t) and folded near the 0 and TF_MAX_SIZE
 * edges. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame_header.h"
#include "fuzz_util.h"

#define SENTINEL 0xA5

static int
is_ascii_digit(unsigned char c)
{
    return c != 0 && memchr("0123456789", c, 10) != NULL;
}

static void
check_decode(const unsigned char *h)
{
    int digits = 1;
    for (int i = 0; i < TF_HEADER_SIZE; i++) {
        digits &= is_ascii_digit(h[i]);
    }
    size_t n = (size_t)0x5a5a5a5a;
    int r = tf_decode_header(h, &n);
    if (!digits) {
        REQUIRE(r == -1);
        REQUIRE(n == (size_t)0x5a5a5a5a);
        return;
    }
    REQUIRE(r == 0);
    char text[TF_HEADER_SIZE + 1];
    memcpy(text, h, TF_HEADER_SIZE);
    text[TF_HEADER_SIZE] = '\0';
    REQUIRE(n == (size_t)strtoull(text, NULL, 10));
    REQUIRE(n <= TF_MAX_SIZE);
    unsigned char again[TF_HEADER_SIZE];
    REQUIRE(tf_encode_header(n, again) == 0);
    REQUIRE(memcmp(again, h, TF_HEADER_SIZE) == 0);
}

static void
check_encode(size_t n)
{
    unsigned char out[TF_HEADER_SIZE + 1];
    memset(out, SENTINEL, sizeof out);
    int r = tf_encode_header(n, out);
    REQUIRE(out[TF_HEADER_SIZE] == SENTINEL);     /* never a byte past the 8 */
    if (n > TF_MAX_SIZE) {
        REQUIRE(r == -1);
        for (int i = 0; i < TF_HEADER_SIZE; i++) {
            REQUIRE(out[i] == SENTINEL);
        }
        return;
    }
    REQUIRE(r == 0);
    char want[32];
    snprintf(want, sizeof want, "%08zu", n);
    REQUIRE(strlen(want) == TF_HEADER_SIZE);
    REQUIRE(memcmp(out, want, TF_HEADER_SIZE) == 0);
    size_t back = 0;
    REQUIRE(tf_decode_header(out, &back) == 0 && back == n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Every window, so that one input tries many headers. */
    for (size_t at = 0; at + TF_HEADER_SIZE <= size; at++) {
        check_decode(data + at);
    }
    /* A short input is zero-padded into one header, so even it is decoded. */
    if (size < TF_HEADER_SIZE) {
        unsigned char h[TF_HEADER_SIZE] = {0};
        memcpy(h, data, size);
        check_decode(h);
    }

    fuzz_input in = {data, size, 0};
    uint64_t raw = take_u64(&in);
    check_encode((size_t)raw);
    check_encode((size_t)(raw % (TF_MAX_SIZE + 1)));               /* in range */
    check_encode(TF_MAX_SIZE - 16 + (size_t)(raw % 33));           /* the upper edge */
    check_encode((size_t)-1 - (size_t)(raw % 16));                 /* near SIZE_MAX */
    return 0;
}
