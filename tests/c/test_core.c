/* Unit tests of the plain-C core, with no Python anywhere: built and run by
 * tests/test_c_core.py.  Prints "N passed, 0 failed" and exits 0 on success. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame_decoder.h"
#include "frame_header.h"
#include "frame_io.h"
#include "frame_outbuf.h"
#include <stdint.h>

static int passed, failed;
#define CHECK(cond) do { if (cond) passed++; else { failed++; \
    fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); } } while (0)

static void
test_header(void)
{
    unsigned char h[TF_HEADER_SIZE];
    size_t n = 0;
    CHECK(tf_encode_header(0, h) == 0 && memcmp(h, "00000000", 8) == 0);
    CHECK(tf_encode_header(12345, h) == 0 && memcmp(h, "00012345", 8) == 0);
    CHECK(tf_encode_header(TF_MAX_SIZE, h) == 0 && memcmp(h, "99999999", 8) == 0);
    CHECK(tf_encode_header(TF_MAX_SIZE + 1, h) == -1);
    CHECK(tf_decode_header((const unsigned char *)"00012345", &n) == 0 && n == 12345);
    CHECK(tf_decode_header((const unsigned char *)"99999999", &n) == 0 && n == TF_MAX_SIZE);
    /* Every byte value at every position: only '0'..'9' pass. */
    int wrong = 0;
    for (int pos = 0; pos < 8; pos++) {
        for (int v = 0; v < 256; v++) {
            memcpy(h, "00000000", 8);
            h[pos] = (unsigned char)v;
            int ok = tf_decode_header(h, &n) == 0;
            wrong += ok != (v >= '0' && v <= '9');
        }
    }
    CHECK(wrong == 0);
    /* Round trip over a spread of sizes. */
    int mismatches = 0;
    for (size_t k = 0; k <= TF_MAX_SIZE; k += 99991) {
        tf_encode_header(k, h);
        mismatches += tf_decode_header(h, &n) != 0 || n != k;
    }
    CHECK(mismatches == 0);
}

typedef struct {
    int fd;
    size_t len;
    unsigned char *got;
    size_t done;
    tf_status status;
} reader_args;

static void *
reader(void *p)
{
    reader_args *a = p;
    tf_io io = {a->fd, TF_NO_DEADLINE, &tf_no_hooks, 0};
    a->status = tf_recv_exact(&io, a->got, a->len, &a->done);
    return NULL;
}

static void
test_vectored_send_with_partial_writes(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int small = 4096;   /* small buffers force many partial writes */
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);

    size_t len = 3 << 20;
    unsigned char *payload = malloc(len);
    for (size_t i = 0; i < len; i++) {
        payload[i] = (unsigned char)(i * 31 + 7);
    }
    unsigned char header[TF_HEADER_SIZE];
    tf_encode_header(len, header);
    reader_args a = {sv[1], TF_HEADER_SIZE + len, malloc(TF_HEADER_SIZE + len), 0, TF_OK};
    pthread_t t;
    pthread_create(&t, NULL, reader, &a);

    struct iovec iov[3] = {{header, TF_HEADER_SIZE}, {NULL, 0}, {payload, len}};
    tf_io io = {sv[0], TF_NO_DEADLINE, &tf_no_hooks, 0};
    size_t done = 0;
    CHECK(tf_send_iov(&io, iov, 3, &done) == TF_OK);
    CHECK(done == TF_HEADER_SIZE + len);
    pthread_join(t, NULL);
    CHECK(a.status == TF_OK && a.done == TF_HEADER_SIZE + len);
    CHECK(memcmp(a.got, header, TF_HEADER_SIZE) == 0);
    CHECK(memcmp(a.got + TF_HEADER_SIZE, payload, len) == 0);
    free(payload);
    free(a.got);
    close(sv[0]);
    close(sv[1]);
}

static void
test_deadline_eof_and_errors(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    unsigned char buf[16];
    size_t done = 0;

    /* Nothing arrives: the deadline ends the call. */
    tf_io io = {sv[1], tf_monotonic_ns() + 50 * 1000000LL, &tf_no_hooks, 0};
    int64_t start = tf_monotonic_ns();
    CHECK(tf_recv_exact(&io, buf, sizeof buf, &done) == TF_TIMEOUT);
    int64_t waited = tf_monotonic_ns() - start;
    CHECK(waited >= 45 * 1000000LL && done == 0);

    /* Part arrives, then the peer closes: EOF, with the part counted. */
    CHECK(write(sv[0], "abc", 3) == 3);
    close(sv[0]);
    io.deadline_ns = TF_NO_DEADLINE;
    CHECK(tf_recv_exact(&io, buf, sizeof buf, &done) == TF_EOF);
    CHECK(done == 3 && memcmp(buf, "abc", 3) == 0);
    close(sv[1]);

    /* A closed descriptor: the errno comes back. */
    tf_io bad = {sv[1], TF_NO_DEADLINE, &tf_no_hooks, 0};
    size_t got = 0;
    CHECK(tf_recv_some(&bad, buf, 1, &got) == TF_ERRNO && bad.error == EBADF);
}

static void
test_decoder_every_split(void)
{
    /* Three frames, fed in two pieces split at every offset. */
    const char *stream = "00000005hello0000000000000003abc";
    size_t len = strlen(stream);
    int bad = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        tf_decoder d;
        tf_decoder_init(&d, 100);
        const char *want[] = {"hello", "", "abc"};
        int got = 0;
        for (int part = 0; part < 2; part++) {
            const char *from = part ? stream + cut : stream;
            size_t n = part ? len - cut : cut;
            if (tf_decoder_feed(&d, from, n) != 0) {
                bad++;
            }
            const unsigned char *p;
            size_t plen, need;
            while (tf_decoder_next(&d, &p, &plen, &need) == TF_DEC_FRAME) {
                bad += got >= 3 || plen != strlen(want[got]) || memcmp(p, want[got], plen) != 0;
                got++;
            }
        }
        bad += got != 3 || tf_decoder_buffered(&d) != 0 || tf_decoder_needed(&d) != 8;
        tf_decoder_free(&d);
    }
    CHECK(bad == 0);
}

static void
test_decoder_errors(void)
{
    tf_decoder d;
    tf_decoder_init(&d, 10);
    const unsigned char *p;
    size_t len, need;
    CHECK(tf_decoder_feed(&d, "", 0) == 0);
    CHECK(tf_decoder_next(&d, &p, &len, &need) == TF_DEC_NEED_MORE && need == 8);
    CHECK(tf_decoder_feed(&d, "00000011", 8) == 0);
    CHECK(tf_decoder_next(&d, &p, &len, &need) == TF_DEC_TOO_LARGE && len == 11);
    CHECK(tf_decoder_needed(&d) == 0);
    tf_decoder_free(&d);
    tf_decoder_init(&d, 10);
    CHECK(tf_decoder_feed(&d, "0000001x", 8) == 0);
    CHECK(tf_decoder_next(&d, &p, &len, &need) == TF_DEC_BAD_HEADER);
    CHECK(tf_decoder_next(&d, &p, &len, &need) == TF_DEC_BAD_HEADER);  /* sticky */
    CHECK(tf_decoder_buffered(&d) == 8);
    tf_decoder_free(&d);
}

static void
test_outbuf_limits(void)
{
    tf_outbuf b;
    tf_outbuf_init(&b, TF_HEADER_SIZE + 3);
    CHECK(b.data == NULL && b.len == 0);        /* no memory until a frame comes */
    CHECK(tf_outbuf_fits(&b, 3) && !tf_outbuf_fits(&b, 4));
    CHECK(tf_outbuf_add(&b, "abcd", 4) == -1 && b.len == 0);
    CHECK(tf_outbuf_add(&b, "", 0) == 0 && b.len == TF_HEADER_SIZE && b.frames == 1);
    CHECK(memcmp(b.data, "00000000", 8) == 0);
    CHECK(!tf_outbuf_fits(&b, 0));              /* 3 bytes left: not even a header */
    CHECK(tf_outbuf_add(&b, "", 0) == -1 && b.frames == 1);
    tf_outbuf_consume(&b, 0);
    CHECK(b.len == TF_HEADER_SIZE && b.frames == 1 && b.cut == 0);
    CHECK(tf_outbuf_frames_within(&b, 0) == 0 && tf_outbuf_frames_within(&b, 8) == 1);
    tf_outbuf_consume(&b, 8);
    CHECK(b.len == 0 && b.frames == 0);
    CHECK(tf_outbuf_add(&b, "abc", 3) == 0 && memcmp(b.data, "00000003abc", 11) == 0);
    tf_outbuf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.frames == 0 && b.cap == TF_HEADER_SIZE + 3);

    /* No capacity at all: nothing fits. */
    tf_outbuf_init(&b, 0);
    CHECK(!tf_outbuf_fits(&b, 0) && tf_outbuf_add(&b, "", 0) == -1);
    /* A capacity too large to allocate, and a payload no header can announce:
     * refused, nothing added (and the size checked before any allocation). */
    tf_outbuf_init(&b, SIZE_MAX);
    CHECK(tf_outbuf_add(&b, "", TF_MAX_SIZE + 1) == -1 && b.data == NULL);
    CHECK(tf_outbuf_add(&b, "x", 1) == -1 && b.data == NULL && b.len == 0 && b.frames == 0);
    tf_outbuf_free(&b);
}

/* A model check: frames of many sizes added, and sends that move any number
 * of bytes -- in the middle of a header, of a payload, on a boundary -- taken
 * off the front.  What is taken off must be exactly the encoded stream, in
 * order, and the frames counted must be those whose last byte it held. */
static void
test_outbuf_partial_sends(void)
{
    enum { CAP = 200, TOTAL = 20000 };
    unsigned char *expected = malloc(TOTAL + 128), *got = malloc(TOTAL + 128);
    size_t *ends = malloc(sizeof(size_t) * TOTAL);  /* stream offsets where frames end */
    size_t nexp = 0, ngot = 0, nends = 0, counted = 0, added = 0;
    unsigned seed = 12345;
    int wrong = 0;
    tf_outbuf b;
    tf_outbuf_init(&b, CAP);
    while (ngot < TOTAL) {
        seed = seed * 1103515245u + 12345u;
        size_t size = (seed >> 16) % 60;
        if (nexp < TOTAL && tf_outbuf_fits(&b, size)) {
            unsigned char payload[60];
            for (size_t i = 0; i < size; i++) {
                payload[i] = (unsigned char)(nexp + i);
            }
            wrong += tf_outbuf_add(&b, payload, size) != 0;
            tf_encode_header(size, expected + nexp);
            memcpy(expected + nexp + TF_HEADER_SIZE, payload, size);
            nexp += TF_HEADER_SIZE + size;
            ends[nends++] = nexp;
            added++;
            if ((seed >> 8) % 3 != 0) {
                continue;
            }
        }
        /* A send that moves n of the waiting bytes. */
        size_t n = b.len == 0 ? 0 : (seed >> 4) % (b.len + 1);
        size_t in_model = 0;
        for (size_t i = 0; i < nends; i++) {
            in_model += ends[i] > ngot && ends[i] <= ngot + n;
        }
        wrong += tf_outbuf_frames_within(&b, n) != in_model;
        if (n > 0) {
            memcpy(got + ngot, b.data, n);
        }
        ngot += n;
        counted += in_model;
        tf_outbuf_consume(&b, n);
        wrong += b.frames != added - counted;
        if (nexp >= TOTAL && b.len > 0) {
            memcpy(got + ngot, b.data, b.len);     /* the last send takes it all */
            counted += tf_outbuf_frames_within(&b, b.len);
            ngot += b.len;
            tf_outbuf_consume(&b, b.len);
        }
    }
    CHECK(wrong == 0);
    CHECK(ngot == nexp && memcmp(got, expected, nexp) == 0);
    CHECK(counted == added && b.len == 0 && b.frames == 0 && b.cut == 0);
    tf_outbuf_free(&b);
    free(expected);
    free(got);
    free(ends);
}

int
main(void)
{
    test_header();
    test_vectored_send_with_partial_writes();
    test_deadline_eof_and_errors();
    test_decoder_every_split();
    test_decoder_errors();
    test_outbuf_limits();
    test_outbuf_partial_sends();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
