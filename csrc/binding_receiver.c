/* tcpframe._tcpframe.Receiver: the receiving half of an event loop's
 * buffered protocol (asyncio.BufferedProtocol, uvloop), on the C decoder.
 *
 *     window = receiver.get_buffer(sizehint)   # the loop recv_into()s it
 *     receiver.buffer_updated(nbytes)          # whole frames are queued
 *     frame = receiver.pop()                   # the next one, or None
 *
 * Bytes go straight from the kernel into memory the receiver owns: the
 * decoder's buffer for small frames (many frames per system call), and for a
 * large frame the bytes object that will be returned, so its payload is never
 * copied in user space.  No bytes object is made per chunk.
 *
 * This is the one place the binding hands memory it owns to Python code (the
 * rule in binding.h): the loop needs a writable buffer.  So, as bytearray
 * does, every export is counted and pins what it points into:
 *   - memory under a live export is never moved or freed (get_buffer raises
 *     BufferError rather than move it; buffer_updated frees nothing then);
 *   - a window is valid only until the next get_buffer/buffer_updated: an
 *     older one refuses to export (BufferError), so a kept window object can
 *     never reach memory that has moved since;
 *   - an export into a large frame's bytes object holds a reference to it,
 *     and a large frame is copied, not returned, if any export is still alive
 *     when it is popped: a bytes object the caller gets is never written
 *     again, whatever anyone kept.
 * In asyncio and uvloop the loop releases its export before the reading task
 * runs, so the copy never happens there. */
#include "binding_types.h"

#include <string.h>

#include "frame_decoder.h"

/* Frames with a payload this large or larger are received straight into
 * their own bytes object; smaller ones go through the decoder's buffer. */
#define DIRECT_MIN ((size_t)64 * 1024)
/* Room offered to each recv_into() for small frames: many per system call
 * while the peer keeps filling it; a connection whose last read was short
 * (idle, trickling, request/response) is offered SMALL_WINDOW, so it holds a
 * small buffer rather than 64 KiB. */
#define WINDOW ((size_t)64 * 1024)
#define SMALL_WINDOW ((size_t)4 * 1024)

typedef struct {
    PyObject *frame;
    int direct;              /* received straight into: copy if still exported */
} queued;

typedef struct {
    PyObject_HEAD
    module_state *st;
    tf_decoder dec;
    /* A large frame being received straight into its bytes object. */
    PyObject *big;           /* or NULL */
    Py_ssize_t big_len;      /* its payload length, announced */
    Py_ssize_t big_got;      /* payload bytes in it so far */
    unsigned char big_header[TF_HEADER_SIZE];
    /* The current window: where the next buffer_updated(n) bytes are. */
    unsigned char *win;
    Py_ssize_t win_len;
    PyObject *win_owner;     /* big when the window is in it, else NULL */
    unsigned long gen;       /* bumped whenever the window changes */
    Py_ssize_t exports;      /* live buffer exports of any window */
    /* Whole frames, not yet popped: a ring. */
    queued *q;
    size_t q_head, q_count, q_cap;
    Py_ssize_t q_bytes;
    int failed;              /* the decoder stopped at a bad or oversized header */
    int lost;                /* memory ran out mid-frame: the stream is unusable */
    int free_when_released;  /* drained after a short read, but still exported */
    int last_filled;         /* the last read filled its window: offer WINDOW */
} Receiver;

typedef struct {
    PyObject_HEAD
    Receiver *r;             /* strong */
    unsigned char *buf;
    Py_ssize_t len;
    unsigned long gen;
} Window;

/* ---------------------------------------------------------------- queue */

/* Room for one more frame, so a frame taken out of the decoder can always
 * be queued: 0, or -1 with MemoryError and nothing changed. */
static int
queue_reserve(Receiver *r)
{
    if (r->q_count == r->q_cap) {
        size_t cap = r->q_cap ? r->q_cap * 2 : 16;
        queued *q = PyMem_New(queued, cap);
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < r->q_count; i++) {
            q[i] = r->q[(r->q_head + i) % r->q_cap];
        }
        PyMem_Free(r->q);
        r->q = q;
        r->q_cap = cap;
        r->q_head = 0;
    }
    return 0;
}

/* Queue a frame (steals the reference); queue_reserve() came first. */
static void
queue_push(Receiver *r, PyObject *frame, int direct)
{
    r->q[(r->q_head + r->q_count) % r->q_cap] = (queued){frame, direct};
    r->q_count++;
    r->q_bytes += PyBytes_GET_SIZE(frame);
}

/* The next queued frame as a new reference the caller may keep forever. */
static PyObject *
queue_pop(Receiver *r)
{
    queued item = r->q[r->q_head];
    if (item.direct && r->exports > 0) {
        /* Someone still holds a view that wrote into it: hand out a copy,
         * never the object the view can still change. */
        PyObject *copy = PyBytes_FromStringAndSize(PyBytes_AS_STRING(item.frame),
                                                   PyBytes_GET_SIZE(item.frame));
        if (copy == NULL) {
            return NULL;   /* the frame stays queued */
        }
        Py_SETREF(item.frame, copy);
    }
    r->q_head = (r->q_head + 1) % r->q_cap;
    r->q_count--;
    r->q_bytes -= PyBytes_GET_SIZE(item.frame);
    if (r->q_count == 0) {
        r->q_head = 0;
    }
    return item.frame;
}

/* --------------------------------------------------------------- window */

static void
forget_window(Receiver *r)
{
    r->win = NULL;
    r->win_len = 0;
    Py_CLEAR(r->win_owner);
    r->gen++;
}

/* Give a drained decoder's memory back (an idle connection then costs no
 * buffer), unless a view still points into it: then once it is released. */
static void
release_idle_buffer(Receiver *r)
{
    r->free_when_released = 0;
    if (tf_decoder_buffered(&r->dec) != 0 || r->win != NULL) {
        return;   /* bytes arrived, or a window was handed out, since */
    }
    if (r->exports > 0) {
        r->free_when_released = 1;
        return;
    }
    tf_decoder_free(&r->dec);
}

static int
window_getbuffer(Window *w, Py_buffer *view, int flags)
{
    Receiver *r = w->r;
    if (w->gen != r->gen || w->len == 0) {
        PyErr_SetString(PyExc_BufferError,
                        "this receive window is stale: get_buffer() or buffer_updated() was "
                        "called since it was handed out; ask get_buffer() for a new one");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)w, w->buf, w->len, 0, flags) < 0) {
        return -1;
    }
    /* The export pins a large frame's bytes object (the decoder's memory is
     * pinned by the count: nothing moves it while exports > 0). */
    view->internal = Py_XNewRef(r->win_owner);
    r->exports++;
    return 0;
}

static void
window_releasebuffer(Window *w, Py_buffer *view)
{
    Receiver *r = w->r;
    Py_XDECREF((PyObject *)view->internal);
    r->exports--;
    /* uvloop calls buffer_updated() before it releases its view: the idle
     * buffer it could not free then is freed now. */
    if (r->exports == 0 && r->free_when_released) {
        release_idle_buffer(r);
    }
}

static Py_ssize_t
window_length(Window *w)
{
    return w->gen == w->r->gen ? w->len : 0;
}

static void
window_dealloc(Window *w)
{
    PyTypeObject *type = Py_TYPE(w);
    Py_CLEAR(w->r);
    type->tp_free((PyObject *)w);
    Py_DECREF(type);
}

/* w[key] and w[key] = v, as memoryview(w) does them: asyncio's SSL
 * protocol reads into w[offset:], its proactor copies with w[:n] = data.  A
 * slice is a view of the same export, so it is counted (and pins) while it
 * lives. */
static PyObject *
window_subscript(Window *w, PyObject *key)
{
    PyObject *mv = PyMemoryView_FromObject((PyObject *)w);
    if (mv == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_GetItem(mv, key);
    Py_DECREF(mv);
    return res;
}

static int
window_ass_subscript(Window *w, PyObject *key, PyObject *value)
{
    PyObject *mv = PyMemoryView_FromObject((PyObject *)w);
    if (mv == NULL) {
        return -1;
    }
    int res = value == NULL ? PyObject_DelItem(mv, key) : PyObject_SetItem(mv, key, value);
    PyObject *r = PyObject_CallMethod(mv, "release", NULL);
    Py_XDECREF(r);
    Py_DECREF(mv);
    return res;
}

PyDoc_STRVAR(window_doc,
"A writable window into a Receiver's memory, from Receiver.get_buffer():\n"
"recv_into() it, then call buffer_updated(nbytes).  Valid until the next\n"
"get_buffer() or buffer_updated(); after that it refuses to export.");

static PyType_Slot window_slots[] = {
    {Py_tp_doc, (void *)window_doc},
    {Py_tp_dealloc, window_dealloc},
    {Py_bf_getbuffer, window_getbuffer},
    {Py_bf_releasebuffer, window_releasebuffer},
    {Py_sq_length, window_length},
    {Py_mp_length, window_length},
    {Py_mp_subscript, window_subscript},
    {Py_mp_ass_subscript, window_ass_subscript},
    {0, NULL},
};

PyType_Spec window_spec = {
    .name = "tcpframe._tcpframe.ReceiveWindow",
    .basicsize = sizeof(Window),
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
#else
    .flags = Py_TPFLAGS_DEFAULT,   /* tp_new is cleared in module_exec instead */
#endif
    .slots = window_slots,
};

/* ------------------------------------------------------------- decoding */

static int
buffer_busy(Receiver *r)
{
    if (r->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "a view of the receive buffer is still held (%zd export(s)): release "
                     "it (memoryview.release(), or drop it) before the next get_buffer()",
                     r->exports);
        return -1;
    }
    return 0;
}

/* Start receiving the frame at the decoder's head straight into a bytes
 * object of its own: its header is whole, its payload `len` is large. */
static int
start_direct(Receiver *r, size_t len)
{
    size_t have = tf_decoder_buffered(&r->dec) - TF_HEADER_SIZE;
    size_t first = len < (size_t)GROW_START ? len : (size_t)GROW_START;
    if (first < have) {
        first = have;
    }
    PyObject *big = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)first);
    if (big == NULL) {
        return -1;
    }
    memcpy(r->big_header, tf_decoder_head(&r->dec), TF_HEADER_SIZE);
    memcpy(PyBytes_AS_STRING(big), tf_decoder_head(&r->dec) + TF_HEADER_SIZE, have);
    tf_decoder_consume(&r->dec, TF_HEADER_SIZE + have);
    r->big = big;
    r->big_len = (Py_ssize_t)len;
    r->big_got = (Py_ssize_t)have;
    return 0;
}

/* Queue every whole frame in the decoder; stop at a bad header, or move a
 * large frame's start into its own bytes object. */
static int
drain_decoder(Receiver *r)
{
    while (!r->failed && r->big == NULL) {
        const unsigned char *payload;
        size_t len, need;
        if (queue_reserve(r) < 0) {
            return -1;
        }
        /* next() consumes the frame; until it is queued, the decoder as it
         * was is kept, so a failed copy leaves the frame where it was. */
        tf_decoder before = r->dec;
        tf_dec_result res = tf_decoder_next(&r->dec, &payload, &len, &need);
        if (res == TF_DEC_FRAME) {
            PyObject *frame = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
            if (frame == NULL) {
                r->dec = before;
                return -1;
            }
            queue_push(r, frame, 0);
        }
        else if (res == TF_DEC_NEED_MORE) {
            if (len >= DIRECT_MIN) {
                return start_direct(r, len);
            }
            return 0;
        }
        else {
            r->failed = 1;
        }
    }
    return 0;
}

/* ----------------------------------------------------------- the methods */

static PyObject *
receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_size", NULL};
    PyObject *max_size_obj = NULL;
    Py_ssize_t max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O:Receiver", kwlist, &max_size_obj) ||
        max_size_arg(max_size_obj, (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0) {
        return NULL;
    }
    module_state *st = state_from_type(type, receiver_new);
    if (st == NULL) {
        return NULL;
    }
    Receiver *r = (Receiver *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    r->st = st;
    tf_decoder_init(&r->dec, (size_t)max_size);
    return (PyObject *)r;
}

static void
receiver_dealloc(Receiver *r)
{
    /* No export can be alive: every window holds a reference to us. */
    PyTypeObject *type = Py_TYPE(r);
    while (r->q_count > 0) {
        Py_DECREF(r->q[r->q_head].frame);
        r->q_head = (r->q_head + 1) % r->q_cap;
        r->q_count--;
    }
    PyMem_Free(r->q);
    Py_CLEAR(r->big);
    Py_CLEAR(r->win_owner);
    tf_decoder_free(&r->dec);
    type->tp_free((PyObject *)r);
    Py_DECREF(type);
}

/* Resize the large frame's bytes object.  Only we hold it here (no export
 * is alive and the window let go of it), so realloc may move it; should
 * anything else hold it anyway, it is copied rather than resized. */
static int
grow_big(Receiver *r, Py_ssize_t size)
{
    if (Py_REFCNT(r->big) == 1) {
        PyObject *big = r->big;
        if (_PyBytes_Resize(&big, size) < 0) {
            r->big = NULL;   /* freed by the failed resize */
            r->lost = 1;
            return -1;
        }
        r->big = big;
        return 0;
    }
    PyObject *big = PyBytes_FromStringAndSize(NULL, size);
    if (big == NULL) {
        return -1;
    }
    memcpy(PyBytes_AS_STRING(big), PyBytes_AS_STRING(r->big), (size_t)r->big_got);
    Py_SETREF(r->big, big);
    return 0;
}

/* Point the window at where the next bytes go.  0, or -1 with an error. */
static int
prepare_window(Receiver *r)
{
    if (buffer_busy(r) < 0) {
        return -1;
    }
    if (r->failed || r->lost) {
        PyErr_SetString(PyExc_BufferError,
                        r->lost ? "a frame was lost when memory ran out: close the connection"
                                : "the stream stopped at a bad frame header: stop reading "
                                  "and close the connection");
        return -1;
    }
    forget_window(r);
    r->free_when_released = 0;
    if (r->big != NULL) {
        Py_ssize_t room = PyBytes_GET_SIZE(r->big);
        if (r->big_got == room) {
            /* Full but the frame is not: double it, as the payload arrives. */
            Py_ssize_t grown = room > r->big_len / 2 ? r->big_len : room * 2;
            if (grow_big(r, grown) < 0) {
                return -1;
            }
            room = grown;
        }
        r->win = (unsigned char *)PyBytes_AS_STRING(r->big) + r->big_got;
        r->win_len = room - r->big_got;
        r->win_owner = Py_NewRef(r->big);
        return 0;
    }
    /* A window's worth of room, not what the frame needs: a frame this path
     * takes is under DIRECT_MIN, so a few reads finish it, and a large header
     * left here (its direct start failed) cannot reserve its length. */
    size_t avail;
    unsigned char *at = tf_decoder_reserve(&r->dec, r->last_filled ? WINDOW : SMALL_WINDOW,
                                           &avail);
    if (at == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    r->win = at;
    r->win_len = (Py_ssize_t)avail;
    return 0;
}

static PyObject *
receiver_get_buffer(Receiver *r, PyObject *sizehint)
{
    /* sizehint is advice (asyncio passes -1): the window is sized by what the
     * frame in progress needs. */
    Py_ssize_t hint = PyLong_AsSsize_t(sizehint);
    if ((hint == -1 && PyErr_Occurred()) || prepare_window(r) < 0) {
        return NULL;
    }
    PyTypeObject *wtype = (PyTypeObject *)r->st->WindowType;
    Window *w = (Window *)wtype->tp_alloc(wtype, 0);
    if (w == NULL) {
        return NULL;
    }
    w->r = (Receiver *)Py_NewRef((PyObject *)r);
    w->buf = r->win;
    w->len = r->win_len;
    w->gen = r->gen;
    return (PyObject *)w;
}

/* Take n bytes the caller wrote at the window's start. */
static int
commit(Receiver *r, Py_ssize_t n)
{
    if (n < 0 || n > r->win_len) {
        PyErr_Format(PyExc_ValueError,
                     "buffer_updated(%zd): the last get_buffer() window holds %zd bytes",
                     n, r->win_len);
        return -1;
    }
    int into_big = r->win_owner != NULL;
    r->last_filled = n == r->win_len;
    forget_window(r);
    if (n == 0) {
        return 0;
    }
    if (queue_reserve(r) < 0) {
        r->lost = 1;   /* n bytes arrived and cannot be kept */
        return -1;
    }
    if (into_big) {
        r->big_got += n;
        if (r->big_got == r->big_len) {
            PyObject *frame = r->big;
            r->big = NULL;
            queue_push(r, frame, 1);
        }
    }
    else {
        tf_decoder_commit(&r->dec, (size_t)n);
    }
    return drain_decoder(r);
}

static PyObject *
receiver_buffer_updated(Receiver *r, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t window = r->win_len;
    if (commit(r, n) < 0) {
        return NULL;
    }
    /* A short read means the peer has nothing more for now. */
    if (n < window) {
        release_idle_buffer(r);
    }
    return PyLong_FromSize_t(r->q_count);
}

static PyObject *
receiver_feed(Receiver *r, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    /* The same path as the loop's: a window, a copy into it, a commit.  The
     * view is ours (data's), not the window's, so exports stay as they are. */
    const char *from = view.buf;
    Py_ssize_t left = view.len;
    int ok = 0;
    while (left > 0 && !r->failed) {
        if (prepare_window(r) < 0) {
            ok = -1;
            break;
        }
        Py_ssize_t n = left < r->win_len ? left : r->win_len;
        memcpy(r->win, from, (size_t)n);
        if (commit(r, n) < 0) {
            ok = -1;
            break;
        }
        from += n;
        left -= n;
    }
    PyBuffer_Release(&view);
    if (ok < 0) {
        return NULL;
    }
    if (left > 0) {
        /* Stopped at a bad header: what came after it is not frames. */
        return PyLong_FromSsize_t(view.len - left);
    }
    return PyLong_FromSsize_t(view.len);
}

static void
raise_failure(Receiver *r)
{
    if (r->lost) {
        PyErr_SetString(PyExc_MemoryError,
                        "a frame was lost when memory ran out while it arrived: the stream "
                        "is out of sync, close the connection");
        return;
    }
    const unsigned char *head = tf_decoder_head(&r->dec);
    size_t n;
    if (tf_decode_header(head, &n) < 0) {
        raise_bad_header(r->st, head);
    }
    else {
        raise_too_large_to_receive(r->st, head, n, (Py_ssize_t)r->dec.max_size);
    }
}

static PyObject *
receiver_pop(Receiver *r, PyObject *unused)
{
    (void)unused;
    if (r->q_count > 0) {
        return queue_pop(r);
    }
    if (r->failed || r->lost) {
        raise_failure(r);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
receiver_pop_all(Receiver *r, PyObject *unused)
{
    (void)unused;
    if (r->q_count == 0 && (r->failed || r->lost)) {
        raise_failure(r);
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        return NULL;
    }
    while (r->q_count > 0) {
        /* A frame leaves the queue only once it is in the list, and frames
         * already in the list are returned even if memory runs out part
         * way: none is lost, the rest stay queued. */
        if (PyList_Append(out, r->q[r->q_head].frame) < 0) {
            break;
        }
        Py_ssize_t last = PyList_GET_SIZE(out) - 1;
        PyObject *frame = queue_pop(r);
        if (frame == NULL) {
            /* Still queued: take it back out of the list. */
            if (PyList_SetSlice(out, last, last + 1, NULL) < 0) {
                Py_DECREF(out);
                return NULL;
            }
            break;
        }
        PyObject *appended = PyList_GET_ITEM(out, last);
        PyList_SET_ITEM(out, last, frame);
        Py_DECREF(appended);
    }
    if (PyErr_Occurred()) {
        if (PyList_GET_SIZE(out) == 0) {
            Py_DECREF(out);
            return NULL;
        }
        PyErr_Clear();   /* what was taken is returned; the error comes again next time */
    }
    return out;
}

static PyObject *
receiver_partial(Receiver *r, PyObject *unused)
{
    (void)unused;
    if (r->big != NULL) {
        PyObject *out = PyBytes_FromStringAndSize(NULL, TF_HEADER_SIZE + r->big_got);
        if (out != NULL) {
            memcpy(PyBytes_AS_STRING(out), r->big_header, TF_HEADER_SIZE);
            memcpy(PyBytes_AS_STRING(out) + TF_HEADER_SIZE, PyBytes_AS_STRING(r->big),
                   (size_t)r->big_got);
        }
        return out;
    }
    return PyBytes_FromStringAndSize((const char *)tf_decoder_head(&r->dec),
                                     (Py_ssize_t)tf_decoder_buffered(&r->dec));
}

static PyObject *
get_expected(Receiver *r, void *closure)
{
    (void)closure;
    if (r->big != NULL) {
        return PyLong_FromSsize_t(TF_HEADER_SIZE + r->big_len);
    }
    size_t n;
    if (tf_decoder_buffered(&r->dec) >= TF_HEADER_SIZE &&
        tf_decode_header(tf_decoder_head(&r->dec), &n) == 0) {
        return PyLong_FromSize_t(TF_HEADER_SIZE + n);
    }
    Py_RETURN_NONE;
}

/* What a queued frame costs beyond its payload: its bytes object's header
 * (and the allocator's rounding). */
#define FRAME_OVERHEAD (sizeof(PyBytesObject) + 16)

/* What the receiver holds now, and what the frame in progress will take once
 * its header is in: a large frame's bytes object is made at its announced
 * length; a small one may grow the buffer to hold it.  A server's memory
 * budget counts this, so it must not be fooled by a buffer pinned by one
 * byte, or by frames of a few bytes that cost ten times that each. */
static PyObject *
get_allocated(Receiver *r, void *closure)
{
    (void)closure;
    size_t held = r->dec.cap + r->q_cap * sizeof(queued) + (size_t)r->q_bytes
                  + r->q_count * FRAME_OVERHEAD;
    size_t n;
    if (r->big != NULL) {
        held += sizeof(PyBytesObject) + (size_t)r->big_len;
    } else if (!r->failed && tf_decoder_buffered(&r->dec) >= TF_HEADER_SIZE &&
               tf_decode_header(tf_decoder_head(&r->dec), &n) == 0 &&
               n <= r->dec.max_size) {
        if (n >= DIRECT_MIN) {
            held += sizeof(PyBytesObject) + n;
        } else if (TF_HEADER_SIZE + n > r->dec.cap) {
            held += TF_HEADER_SIZE + n - r->dec.cap;
        }
    }
    return PyLong_FromSize_t(held);
}

static PyObject *
get_in_frame(Receiver *r, void *closure)
{
    (void)closure;
    return PyBool_FromLong(r->big != NULL || tf_decoder_buffered(&r->dec) > 0);
}

static PyObject *
get_ready(Receiver *r, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(r->q_count);
}

static PyObject *
get_ready_bytes(Receiver *r, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(r->q_bytes);
}

static PyObject *
get_buffered(Receiver *r, void *closure)
{
    (void)closure;
    size_t partial = r->big != NULL ? TF_HEADER_SIZE + (size_t)r->big_got
                                    : tf_decoder_buffered(&r->dec);
    return PyLong_FromSize_t(partial + (size_t)r->q_bytes);
}

static PyObject *
get_failed(Receiver *r, void *closure)
{
    (void)closure;
    return PyBool_FromLong(r->failed || r->lost);
}

static PyObject *
get_max_size(Receiver *r, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(r->dec.max_size);
}

static PyMethodDef receiver_methods[] = {
    {"get_buffer", (PyCFunction)receiver_get_buffer, METH_O,
     "get_buffer($self, sizehint, /)\n--\n\n"
     "A writable window for the next bytes received (BufferedProtocol's\n"
     "get_buffer): recv_into() it, then call buffer_updated(nbytes).  Raises\n"
     "BufferError while a view of an earlier window is still held, or after\n"
     "a bad header (stop reading then)."},
    {"buffer_updated", (PyCFunction)receiver_buffer_updated, METH_O,
     "buffer_updated($self, nbytes, /)\n--\n\n"
     "Take the nbytes written at the start of the last window; queue every\n"
     "frame now whole.  Returns how many frames are queued."},
    {"feed", (PyCFunction)receiver_feed, METH_O,
     "feed($self, data, /)\n--\n\n"
     "Copy bytes in, as if received (for tests and sans-IO use).  Returns\n"
     "how many were stored: all of them, unless a bad header stopped it\n"
     "(then what came with it in the same window is stored, not decoded)."},
    {"pop", (PyCFunction)receiver_pop, METH_NOARGS,
     "pop($self, /)\n--\n\n"
     "The next whole frame's payload, or None if none is queued.  At a bad\n"
     "or oversized header, once the frames before it are popped, raises\n"
     "FrameError / FrameTooLarge (every time)."},
    {"pop_all", (PyCFunction)receiver_pop_all, METH_NOARGS,
     "pop_all($self, /)\n--\n\n"
     "Every queued frame's payload, as a list (empty if none).  Raises as\n"
     "pop() when none is queued and the stream stopped at a bad header."},
    {"partial", (PyCFunction)receiver_partial, METH_NOARGS,
     "partial($self, /)\n--\n\n"
     "The raw bytes (header included) of the frame in progress: what\n"
     "ConnectionClosed.partial carries when the peer closes mid-frame."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef receiver_getset[] = {
    {"ready", (getter)get_ready, NULL, "How many whole frames are queued.", NULL},
    {"ready_bytes", (getter)get_ready_bytes, NULL, "Payload bytes of the queued frames.", NULL},
    {"buffered", (getter)get_buffered, NULL,
     "Bytes received and not yet popped: queued payloads and the frame in progress.", NULL},
    {"in_frame", (getter)get_in_frame, NULL,
     "True while part of a frame has arrived and the rest has not.", NULL},
    {"expected", (getter)get_expected, NULL,
     "The frame in progress's whole size (header included), once its header\n"
     "is whole; else None.", NULL},
    {"failed", (getter)get_failed, NULL,
     "True once the stream stopped at a bad or oversized header (or a frame\n"
     "was lost to a failed allocation): pop() raises once the queue is empty.", NULL},
    {"max_size", (getter)get_max_size, NULL, "The largest payload accepted.", NULL},
    {"allocated", (getter)get_allocated, NULL,
     "Bytes of memory held: the receive buffer's capacity (even while a window\n"
     "pins it), the queue, each queued frame with its bytes object, and the\n"
     "frame in progress at its announced size once its header is in (a large\n"
     "frame's bytes object is made whole).  What a server's memory budget\n"
     "counts.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(receiver_doc,
"Receiver(*, max_size=99999999)\n--\n\n"
"The receiving half of an event loop's buffered protocol, on the C\n"
"decoder: the loop recv_into()s get_buffer()'s window and calls\n"
"buffer_updated(n); whole frames queue up for pop() / pop_all().  Large\n"
"payloads are received straight into the bytes object returned.  Used by\n"
"tcpframe.aio; usable with any loop that has a buffered-protocol API.");

static PyType_Slot receiver_slots[] = {
    {Py_tp_doc, (void *)receiver_doc},
    {Py_tp_new, receiver_new},
    {Py_tp_dealloc, receiver_dealloc},
    {Py_tp_methods, receiver_methods},
    {Py_tp_getset, receiver_getset},
    {0, NULL},
};

PyType_Spec receiver_spec = {
    .name = "tcpframe._tcpframe.Receiver",
    .basicsize = sizeof(Receiver),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = receiver_slots,
};
