/* libFuzzer harness for csrc/frame_decoder.c, the sans-IO decoder.
 *
 * The input says how to feed a stream, then gives the stream:
 *   byte     limit kind: %4 = 0: u8 follows, 1: u16, 2: u32, 3: one of
 *            {0, 1, TF_MAX_SIZE-1, TF_MAX_SIZE, SIZE_MAX} chosen by a u8
 *   byte     direct threshold: 0 = never; else a frame announced at least
 *            this long (b < 128: b, else (b-127)*64) is taken out of the
 *            decoder once its header is whole and its payload assembled
 *            outside, as Connection and Receiver do for large frames
 *   u32      allocation failures: bit k set = the k-th realloc() fails
 *   byte     number of chunk specs (1 + b % 16), then 2 bytes per spec:
 *              size  (x16 if flags bit 6)
 *              flags bits 0-2: how the chunk goes in: 0,5-7 tf_decoder_feed;
 *                      1 reserve(size) + commit; 2 reserve(less) in several
 *                      rounds; 3 reserve(size + u16 more) + commit(size);
 *                      4 reserve(size), commit(0), then feed
 *                    bit 3: take frames out after this chunk
 *                    bit 4: first probe reserve() with an absurd size
 *                    bit 5: a direct transfer stops here and puts its
 *                           bytes back (tf_decoder_feed), as on a failure
 *                    bit 7: then take 1 + u8 % buffered bytes out raw
 *                           (tf_decoder_consume), as Connection's exact
 *                           reads do; the reference parses afresh after
 *                           them
 *   rest     the stream, fed in those chunk sizes, the specs cycling.
 *
 * A one-shot reference decoder, written here from the format alone, parses
 * the whole stream.  Checked after every step: the decoder's buffer holds
 * exactly the stream bytes not yet taken out; every frame taken out is the
 * reference's next one, byte for byte, and no longer than the limit; after
 * taking frames out, what tf_decoder_next says (need more / bad header / too
 * large, with need and len) and what tf_decoder_needed says is what the
 * reference says for that prefix; an error result consumes nothing and
 * stays; reserve() gives room for at least what was asked, or NULL only
 * when an allocation failed, and then the buffered bytes are intact.
 *
 * Built with -DTF_FUZZ_STRICT=1 it also tries reserve() with sizes the
 * decoder mishandles today (want == 0 on an empty decoder, end + want past
 * SIZE_MAX): see fuzz/native/README.md. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame_decoder.h"
#include "frame_header.h"
#include "fuzz_util.h"

#ifndef TF_FUZZ_STRICT
#define TF_FUZZ_STRICT 0
#endif

/* --- allocation failures: frame_decoder.c is built with -Drealloc=tf_fuzz_realloc */

#define REFUSE_ABOVE ((size_t)1 << 24)   /* larger requests fail: out of memory */

void *tf_fuzz_realloc(void *p, size_t n);

static uint32_t fail_mask;
static unsigned realloc_calls;
static int realloc_refused;

void *
tf_fuzz_realloc(void *p, size_t n)
{
    unsigned k = realloc_calls++;
    if ((k < 32 && (fail_mask >> k & 1)) || n > REFUSE_ABOVE) {
        realloc_refused = 1;
        return NULL;
    }
    return realloc(p, n);
}

/* --- the reference: the whole stream parsed in one go ---------------------- */

enum { END_NEED, END_BAD, END_TOO_LARGE };

typedef struct {
    size_t at, len;         /* payload offset and length in the stream */
} ref_frame;

typedef struct {
    ref_frame *frames;
    size_t nframes;
    size_t end_at;          /* where the first frame that is not whole starts */
    int end_kind;
    size_t end_len;         /* its announced length, once its header is whole */
} ref_parse;

NOT_TRACED static int
ref_header(const uint8_t *h, size_t *n)
{
    size_t v = 0;
    for (int i = 0; i < 8; i++) {
        if (h[i] < '0' || h[i] > '9') {
            return 0;
        }
        v = v * 10 + (size_t)(h[i] - '0');
    }
    *n = v;
    return 1;
}

/* Parse stream[from ..] (the stream as a reader sees it after taking the
 * bytes before `from` out raw). */
NOT_TRACED static void
ref_run(ref_parse *r, const uint8_t *s, size_t len, size_t limit, size_t from)
{
    size_t pos = from, n = 0;
    free(r->frames);
    r->frames = malloc(((len - from) / 8 + 1) * sizeof *r->frames);
    r->nframes = 0;
    r->end_len = 0;
    for (;;) {
        r->end_at = pos;
        if (len - pos < 8) {
            r->end_kind = END_NEED;
            return;
        }
        if (!ref_header(s + pos, &n)) {
            r->end_kind = END_BAD;
            return;
        }
        r->end_len = n;
        if (n > limit) {
            r->end_kind = END_TOO_LARGE;
            return;
        }
        if (len - pos - 8 < n) {
            r->end_kind = END_NEED;
            return;
        }
        r->frames[r->nframes++] = (ref_frame){pos + 8, n};
        pos += 8 + n;
    }
}

/* --- the run ---------------------------------------------------------------- */

typedef struct {
    uint8_t size, flags;
} spec;

typedef struct {
    const uint8_t *s;       /* the stream */
    size_t slen;
    size_t limit;
    tf_decoder d;
    ref_parse ref;
    size_t fed;             /* stream bytes given so far */
    size_t q;               /* stream offset of the decoder's first buffered byte */
    size_t fi;              /* frames taken out so far */
    size_t direct_min;
    /* a frame being assembled outside the decoder */
    int direct;
    size_t direct_at;       /* stream offset of its header */
    uint8_t header[8];
    uint8_t *big;
    size_t big_len, big_got;
} run;

NOT_TRACED static void
check_state(const run *r)
{
    const tf_decoder *d = &r->d;
    REQUIRE(d->start <= d->end && d->end <= d->cap);
    REQUIRE((d->cap == 0) == (d->data == NULL));
    REQUIRE(d->max_size == r->limit);
    REQUIRE(d->start < d->end || d->start == 0);      /* empty means reset */
    size_t buffered = tf_decoder_buffered(d);
    REQUIRE(buffered == d->end - d->start);
    if (r->direct) {
        REQUIRE(buffered == 0);
        return;
    }
    REQUIRE(r->q <= r->fed && buffered == r->fed - r->q);
    if (buffered > 0) {
        REQUIRE(memcmp(tf_decoder_head(d), r->s + r->q, buffered) == 0);
    }
}

/* reserve(), checked: room for at least want, where the buffer ends, or NULL
 * only when an allocation failed, with nothing lost. */
static unsigned char *
reserve_checked(run *r, size_t want, size_t *avail)
{
    realloc_refused = 0;
    unsigned char *at = tf_decoder_reserve(&r->d, want, avail);
    check_state(r);
    if (same_address(at, NULL)) {
        /* Out of memory, or a size no buffer can have (end + want wraps). */
        REQUIRE(realloc_refused || want > (size_t)-1 - r->d.end);
        return NULL;
    }
    REQUIRE(*avail >= want);
    REQUIRE(same_address(at, r->d.data + r->d.end) && *avail == r->d.cap - r->d.end);
    return at;
}

/* Bytes the decoder must take, as fed; a failed allocation is retried
 * (only the first 32 calls can be made to fail). */
static void
feed_checked(run *r, const uint8_t *bytes, size_t n)
{
    for (;;) {
        realloc_refused = 0;
        size_t before = tf_decoder_buffered(&r->d);
        int rc = tf_decoder_feed(&r->d, bytes, n);
        if (rc == 0) {
            REQUIRE(tf_decoder_buffered(&r->d) == before + n);
            return;
        }
        REQUIRE(rc == -1 && realloc_refused && n > 0);
        REQUIRE(tf_decoder_buffered(&r->d) == before);    /* nothing added */
        REQUIRE(realloc_calls <= 64);
    }
}

/* Give the decoder the next n stream bytes, the way flags say. */
static void
give(run *r, size_t n, uint8_t flags, fuzz_input *in)
{
    const uint8_t *from = r->s + r->fed;
    int how = flags & 7;
    if (n == 0 && !TF_FUZZ_STRICT) {
        how = 0;        /* reserve(0) on an empty decoder: see the strict build */
    }
    size_t avail;
    unsigned char *at;
    switch (how) {
    case 1:
    case 3:
    case 4: {
        size_t want = n;
        if (how == 3) {
            want += take_u16(in);
        }
        while (same_address(at = reserve_checked(r, want, &avail), NULL)) {
            REQUIRE(realloc_calls <= 64);
        }
        if (how == 4) {
            tf_decoder_commit(&r->d, 0);
            check_state(r);
            feed_checked(r, from, n);
            break;
        }
        memcpy(at, from, n);
        tf_decoder_commit(&r->d, n);
        break;
    }
    case 2: {
        size_t done = 0;
        while (done < n) {
            size_t want = 1 + take_u8(in) % (n - done);
            while (same_address(at = reserve_checked(r, want, &avail), NULL)) {
                REQUIRE(realloc_calls <= 64);
            }
            size_t put = avail < n - done ? avail : n - done;
            memcpy(at, from + done, put);
            tf_decoder_commit(&r->d, put);
            done += put;
            r->fed += put;
            check_state(r);
        }
        r->fed -= n;
        break;
    }
    default:
        feed_checked(r, from, n);
        break;
    }
    r->fed += n;
    check_state(r);
}

/* A reserve() that cannot be met must fail cleanly. */
static void
probe_absurd(run *r, fuzz_input *in)
{
    uint8_t k = take_u8(in);
    size_t want;
    switch (k % 4) {
    case 0: want = REFUSE_ABOVE + 1 + k; break;
    case 1: want = ((size_t)1 << (25 + k % 32)); break;
    case 2: want = (size_t)-1 / 2 + k; break;     /* growth by doubling overshoots */
#if TF_FUZZ_STRICT
    default: want = (size_t)-1 - k % 64; break;   /* end + want wraps around */
#else
    default: want = (size_t)-1 / 4 * 3; break;
#endif
    }
    size_t avail = 0;
    reserve_checked(r, want, &avail);
}

/* What the decoder must say after being given stream[0 .. fed) with every
 * whole frame taken out: the reference's view of that prefix. */
static void
expected_now(const run *r, tf_dec_result *kind, size_t *len, size_t *need)
{
    size_t q = r->q, have = r->fed - r->q;
    *len = 0;
    *need = 0;
    if (have < 8) {
        *kind = TF_DEC_NEED_MORE;
        *need = 8 - have;
        return;
    }
    size_t announced;
    if (r->fi < r->ref.nframes) {
        REQUIRE(r->ref.frames[r->fi].at == q + 8);
        announced = r->ref.frames[r->fi].len;
    }
    else {
        REQUIRE(r->ref.end_at == q);
        if (r->ref.end_kind == END_BAD) {
            *kind = TF_DEC_BAD_HEADER;
            return;
        }
        announced = r->ref.end_len;
        if (r->ref.end_kind == END_TOO_LARGE) {
            *kind = TF_DEC_TOO_LARGE;
            *len = announced;
            return;
        }
    }
    /* The header is whole and within the limit, the payload is not. */
    REQUIRE(have - 8 < announced);
    *kind = TF_DEC_NEED_MORE;
    *len = announced;
    *need = 8 + announced - have;
}

static void
take_frame(run *r, const unsigned char *payload, size_t len)
{
    REQUIRE(r->fi < r->ref.nframes);
    const ref_frame *f = &r->ref.frames[r->fi];
    REQUIRE(len == f->len && len <= r->limit);
    REQUIRE(f->at + len <= r->fed);
    if (len > 0) {
        REQUIRE(memcmp(payload, r->s + f->at, len) == 0);
    }
    r->fi++;
    r->q = f->at + len;
}

static void
start_direct(run *r, size_t len)
{
    size_t have = tf_decoder_buffered(&r->d) - 8;
    r->direct = 1;
    r->direct_at = r->q;
    memcpy(r->header, tf_decoder_head(&r->d), 8);
    r->big = malloc(have > 0 ? have : 1);
    memcpy(r->big, tf_decoder_head(&r->d) + 8, have);
    r->big_len = len;
    r->big_got = have;
    tf_decoder_consume(&r->d, 8 + have);
    REQUIRE(tf_decoder_buffered(&r->d) == 0);
    check_state(r);
}

/* The direct transfer failed part way: everything goes back, in order. */
static void
put_back(run *r)
{
    r->direct = 0;
    r->q = r->direct_at;
    feed_checked(r, r->header, 8);
    feed_checked(r, r->big, r->big_got);
    free(r->big);
    r->big = NULL;
    check_state(r);
}

/* A raw read (Connection's receive_exact): the next k buffered bytes are
 * taken out as they are, frames or not; the stream is parsed afresh after
 * them. */
static void
take_raw(run *r, fuzz_input *in)
{
    size_t buffered = tf_decoder_buffered(&r->d);
    if (r->direct || buffered == 0) {
        return;
    }
    size_t k = 1 + take_u8(in) % buffered;
    REQUIRE(memcmp(tf_decoder_head(&r->d), r->s + r->q, k) == 0);
    tf_decoder_consume(&r->d, k);
    r->q += k;
    r->fi = 0;
    ref_run(&r->ref, r->s, r->slen, r->limit, r->q);
    check_state(r);
}

/* Take every whole frame out, then compare the decoder's verdict with the
 * reference's. */
static void
drain(run *r)
{
    if (r->direct) {
        /* Between the pieces of a direct transfer the decoder is empty. */
        const unsigned char *payload;
        size_t len, need;
        REQUIRE(tf_decoder_needed(&r->d) == 8);
        REQUIRE(tf_decoder_next(&r->d, &payload, &len, &need) == TF_DEC_NEED_MORE);
        REQUIRE(len == 0 && need == 8);
        return;
    }
    for (;;) {
        const unsigned char *payload = NULL;
        size_t len = 12345, need = 54321;
        size_t needed = tf_decoder_needed(&r->d);
        tf_dec_result got = tf_decoder_next(&r->d, &payload, &len, &need);
        if (got == TF_DEC_FRAME) {
            REQUIRE(needed == 0);
            REQUIRE(len == 0 || inside(payload, len, r->d.data, r->d.cap));
            take_frame(r, payload, len);
            check_state(r);
            continue;
        }
        tf_dec_result kind;
        size_t want_len, want_need;
        expected_now(r, &kind, &want_len, &want_need);
        REQUIRE(got == kind);
        check_state(r);       /* an error result consumed nothing */
        if (kind == TF_DEC_NEED_MORE) {
            REQUIRE(need == want_need && len == want_len && needed == want_need);
            if (r->direct_min && len >= r->direct_min) {
                start_direct(r, len);
            }
        }
        else {
            REQUIRE(needed == 0);
            if (kind == TF_DEC_TOO_LARGE) {
                REQUIRE(len == want_len && len > r->limit);
            }
            /* Sticky: asking again says the same. */
            size_t len2, need2;
            REQUIRE(tf_decoder_next(&r->d, &payload, &len2, &need2) == kind);
            check_state(r);
        }
        return;
    }
}

/* n more stream bytes for the frame being assembled outside; the rest of the
 * chunk, if the frame is done, is returned for the decoder. */
static size_t
direct_take(run *r, size_t n)
{
    size_t take = r->big_len - r->big_got;
    take = take < n ? take : n;
    if (take > 0) {
        r->big = realloc(r->big, r->big_got + take);
        memcpy(r->big + r->big_got, r->s + r->fed, take);
        r->big_got += take;
        r->fed += take;
    }
    if (r->big_got == r->big_len) {
        r->direct = 0;
        r->q = r->direct_at;
        take_frame(r, r->big, r->big_len);
        REQUIRE(r->q == r->fed);
        free(r->big);
        r->big = NULL;
        check_state(r);
    }
    return n - take;
}

static size_t
limit_from(fuzz_input *in)
{
    static const size_t fixed[] = {0, 1, TF_MAX_SIZE - 1, TF_MAX_SIZE, (size_t)-1};
    switch (take_u8(in) % 4) {
    case 0: return take_u8(in);
    case 1: return take_u16(in);
    case 2: return take_u32(in);
    default: return fixed[take_u8(in) % 5];
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_input in = {data, size, 0};
    run r;
    memset(&r, 0, sizeof r);
    r.limit = limit_from(&in);
    uint8_t dm = take_u8(&in);
    r.direct_min = dm < 128 ? dm : (size_t)(dm - 127) * 64;
    fail_mask = take_u32(&in);
    realloc_calls = 0;
    spec specs[16];
    int nspecs = 1 + take_u8(&in) % 16;
    for (int i = 0; i < nspecs; i++) {
        specs[i].size = take_u8(&in);
        specs[i].flags = take_u8(&in);
    }
    /* The rest is the stream; the specs' own extra bytes (u16 for "more",
     * rounds of reserve) come from a copy of the specs region, so the stream
     * does not shift when they are used. */
    r.s = data + in.pos;
    r.slen = size - in.pos;
    fuzz_input extra = {data, in.pos, 0};

    ref_run(&r.ref, r.s, r.slen, r.limit, 0);
    tf_decoder_init(&r.d, r.limit);
    check_state(&r);

    size_t steps = 0;
    while (r.fed < r.slen) {
        const spec *sp = &specs[steps % (size_t)nspecs];
        size_t n = sp->flags & 0x40 ? (size_t)sp->size * 16 : sp->size;
        if (++steps > 4 * r.slen + 64) {
            n = r.slen - r.fed;     /* specs that never move: finish in one go */
        }
        if (n > r.slen - r.fed) {
            n = r.slen - r.fed;
        }
        if (sp->flags & 0x10) {
            probe_absurd(&r, &extra);
        }
        if (r.direct && (sp->flags & 0x20)) {
            put_back(&r);
        }
        if (r.direct) {
            size_t rest = direct_take(&r, n);
            if (rest > 0) {
                give(&r, rest, sp->flags, &extra);
            }
        }
        else {
            give(&r, n, sp->flags, &extra);
        }
        if (sp->flags & 0x08) {
            drain(&r);
        }
        if (sp->flags & 0x80) {
            take_raw(&r, &extra);
        }
    }
    /* The end of the stream: a transfer in flight goes back, and the decoder
     * must be where the reference ends. */
    r.direct_min = 0;
    if (r.direct) {
        put_back(&r);
    }
    drain(&r);
    REQUIRE(r.fi == r.ref.nframes);
    REQUIRE(r.q == r.ref.end_at);

    tf_decoder_free(&r.d);
    REQUIRE(same_address(r.d.data, NULL) && r.d.cap == 0 && tf_decoder_buffered(&r.d) == 0);
    REQUIRE(r.d.max_size == r.limit);
    free(r.ref.frames);
    return 0;
}
