/* tcpframe.Connection: a socket plus a receive buffer (frame_decoder.c).
 *
 * One recv() may carry many frames, so a stream of small frames costs one
 * system call per batch rather than two per frame; a large payload is
 * received straight into its bytes object, never through the buffer; and
 * send_many() puts many frames in one vectored call.  A Connection never
 * loses received bytes: after a timeout or close they stay buffered (and
 * are reported in .partial), and the next read carries on from them. */
#include "binding.h"

#include <string.h>

#include "frame_decoder.h"

/* Read-ahead per recv(): many small frames per system call. */
#define READ_CHUNK ((size_t)1 << 16)
/* Payloads at least this big bypass the buffer: received in place. */
#define DIRECT_MIN ((size_t)1 << 16)
/* send_many() copies payloads up to this size next to their headers (one
 * iovec for many frames); larger ones get an iovec of their own. */
#define COPY_MAX ((Py_ssize_t)1024)
/* Frames per sendmsg() in send_many(): two iovecs each, under IOV_MAX. */
#define BATCH 500

typedef struct {
    PyObject_HEAD
    PyObject *sock;          /* owned; NULL once closed */
    module_state *st;        /* alive as long as our type, which we hold */
    Py_ssize_t max_size;
    tf_decoder dec;
    /* Reads in progress: they write into dec's buffer with the GIL released,
     * so close() from another thread leaves freeing it to the last one. */
    int readers;
} Connection;

int
is_connection(module_state *st, PyObject *obj)
{
    return PyObject_TypeCheck(obj, (PyTypeObject *)st->ConnectionType);
}

static PyObject *
open_socket(Connection *c)
{
    if (c->sock == NULL) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed Connection");
    }
    return c->sock;
}

/* -------------------------------------------------------------- reading */

/* A read failed; what arrived of the current item is in the buffer, and
 * stays there.  `expected` is the item's size in bytes, or -1 (None) when
 * nothing of it arrived and its size is not known. */
static void
raise_read_failure(Connection *c, Stream *s, tf_status status, Py_ssize_t expected,
                   const char *what)
{
    PyObject *exp = expected < 0 ? Py_NewRef(Py_None) : PyLong_FromSsize_t(expected);
    if (exp == NULL) {
        return;
    }
    Progress p = {what, "", 0, tf_decoder_buffered(&c->dec), exp, 1};
    raise_recv_failure(s, status, &p, (const char *)tf_decoder_head(&c->dec));
    Py_DECREF(exp);
}

/* The next n bytes of the stream, after `skip` buffered bytes (a frame's
 * header) set aside, as a new bytes object: the part already buffered is
 * moved out, the rest received in place into the object as it grows, never
 * through the buffer.  On failure everything goes back into the buffer, in
 * order, so nothing received is lost.  Needs fewer than skip + n buffered. */
static PyObject *
take_then_receive(Connection *c, Stream *s, size_t skip, size_t n, Py_ssize_t expected,
                  const char *what)
{
    const unsigned char *head = tf_decoder_head(&c->dec);
    size_t have = tf_decoder_buffered(&c->dec) - skip;
    size_t start = n < (size_t)GROW_START ? n : (size_t)GROW_START;
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(start > have ? start : have));
    if (result == NULL) {
        return NULL;
    }
    unsigned char kept[TF_HEADER_SIZE];
    if (skip + have > 0) {      /* an empty decoder may have no buffer at all */
        memcpy(kept, head, skip);
        memcpy(PyBytes_AS_STRING(result), head + skip, have);
        tf_decoder_consume(&c->dec, skip + have);
    }

    size_t got = have;
    tf_status status = recv_growing_into(s, (Py_ssize_t)n, &result, &got);
    if (status == TF_OK) {
        return result;
    }
    PyObject *pending = take_exception();
    int fed = tf_decoder_feed(&c->dec, kept, skip) == 0 &&
              (result == NULL || tf_decoder_feed(&c->dec, PyBytes_AS_STRING(result), got) == 0);
    Py_XDECREF(result);
    if (pending != NULL) {
        put_exception(pending);
        return NULL;
    }
    if (!fed) {
        return PyErr_NoMemory();
    }
    raise_read_failure(c, s, status, expected, what);
    return NULL;
}

/* The next frame's payload.  With eof_ok, a clean close between frames
 * returns NULL with no exception set (the end of iteration). */
static PyObject *
read_frame_buffered(Connection *c, Py_ssize_t max_size, int eof_ok)
{
    if (open_socket(c) == NULL) {
        return NULL;
    }
    c->dec.max_size = (size_t)max_size;
    Stream s;
    int opened = 0;     /* the socket is touched only when the buffer runs dry */
    PyObject *result = NULL;
    c->readers++;
    for (;;) {
        const unsigned char *payload;
        size_t len, need;
        tf_dec_result r = tf_decoder_next(&c->dec, &payload, &len, &need);
        if (r == TF_DEC_FRAME) {
            result = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
            break;
        }
        if (r == TF_DEC_BAD_HEADER) {
            raise_bad_header(c->st, tf_decoder_head(&c->dec));
            break;
        }
        if (r == TF_DEC_TOO_LARGE) {
            raise_too_large_to_receive(c->st, tf_decoder_head(&c->dec), len, max_size);
            break;
        }
        if (!opened) {
            if (stream_open(&s, c->st, c->sock) < 0) {
                break;
            }
            opened = 1;
        }
        Py_ssize_t announced = tf_decoder_buffered(&c->dec) >= TF_HEADER_SIZE ? (Py_ssize_t)len : -1;
        if (announced >= (Py_ssize_t)DIRECT_MIN) {
            result = take_then_receive(c, &s, TF_HEADER_SIZE, len, TF_HEADER_SIZE + announced,
                                       "frame");
            break;
        }
        size_t avail;
        unsigned char *into = tf_decoder_reserve(&c->dec, need > READ_CHUNK ? need : READ_CHUNK, &avail);
        if (into == NULL) {
            PyErr_NoMemory();
            break;
        }
        size_t got = 0;
        tf_status status = stream_recv_some(&s, (char *)into, avail, &got);
        if (status == TF_OK) {
            tf_decoder_commit(&c->dec, got);
            continue;
        }
        size_t buffered = tf_decoder_buffered(&c->dec);
        if (!(status == TF_EOF && eof_ok && buffered == 0)) {
            Py_ssize_t expected = announced >= 0 ? TF_HEADER_SIZE + announced
                                  : buffered > 0 ? TF_HEADER_SIZE : -1;
            raise_read_failure(c, &s, status, expected, announced < 0 && buffered ? "frame header"
                                                                                  : "frame");
        }
        break;
    }
    if (opened && stream_close(&s) < 0) {
        Py_CLEAR(result);
    }
    if (--c->readers == 0 && c->sock == NULL) {
        tf_decoder_free(&c->dec);   /* closed while we read: ours to free */
    }
    return result;
}

PyObject *
connection_read_frame(PyObject *conn, Py_ssize_t max_size, int use_default)
{
    Connection *c = (Connection *)conn;
    return read_frame_buffered(c, use_default ? c->max_size : max_size, 0);
}

/* Fill buf[0..n): buffered bytes first, then straight from the socket. */
static int
receive_exact(Connection *c, char *buf, size_t n)
{
    size_t take = tf_decoder_buffered(&c->dec);
    take = take < n ? take : n;
    if (take > 0) {             /* an empty decoder may have no buffer at all */
        memcpy(buf, tf_decoder_head(&c->dec), take);
        tf_decoder_consume(&c->dec, take);
    }
    if (take == n) {
        return 0;
    }
    Stream s;
    if (stream_open(&s, c->st, c->sock) < 0) {
        tf_decoder_feed(&c->dec, buf, take);
        return -1;
    }
    size_t done = take;
    tf_status status = stream_recv_exact(&s, buf, n, &done);
    if (status != TF_OK) {
        PyObject *pending = take_exception();
        int fed = tf_decoder_feed(&c->dec, buf, done) == 0;
        if (pending != NULL) {
            put_exception(pending);
        }
        else if (!fed) {
            PyErr_NoMemory();
        }
        else {
            PyObject *expected = PyLong_FromSize_t(n);
            if (expected != NULL) {
                Progress p = {"data", "", 0, done, expected, 1};
                raise_recv_failure(&s, status, &p, buf);
                Py_DECREF(expected);
            }
        }
    }
    if (stream_close(&s) < 0 || status != TF_OK) {
        return -1;
    }
    return 0;
}

PyObject *
connection_socket(PyObject *conn)
{
    return open_socket((Connection *)conn);
}

/* -------------------------------------------------------------- sending */

PyObject *
connection_send_frame(PyObject *conn, const char *data, Py_ssize_t len)
{
    Connection *c = (Connection *)conn;
    PyObject *sock = open_socket(c);
    return sock == NULL ? NULL : send_frame(c->st, sock, data, len);
}

/* Send frames[lo..hi) in one vectored call: headers and small payloads
 * copied side by side into one staging block, large payloads by reference. */
static tf_status
send_batch(Stream *s, Py_buffer *views, Py_ssize_t count, size_t *done, int *nomem)
{
    size_t staged = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        staged += TF_HEADER_SIZE + (views[i].len <= COPY_MAX ? (size_t)views[i].len : 0);
    }
    unsigned char *block = PyMem_Malloc(staged ? staged : 1);
    struct iovec *iov = PyMem_Malloc(sizeof(struct iovec) * (size_t)(2 * count + 1));
    if (block == NULL || iov == NULL) {
        PyMem_Free(block);
        PyMem_Free(iov);
        *nomem = 1;
        return TF_ABORTED;
    }
    int cnt = 0;
    size_t at = 0, run_start = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        tf_encode_header((size_t)views[i].len, block + at);
        at += TF_HEADER_SIZE;
        if (views[i].len <= COPY_MAX) {
            memcpy(block + at, views[i].buf, (size_t)views[i].len);
            at += (size_t)views[i].len;
            continue;
        }
        /* Close the staged run (ending with this header), then the payload. */
        iov[cnt].iov_base = block + run_start;
        iov[cnt++].iov_len = at - run_start;
        iov[cnt].iov_base = views[i].buf;
        iov[cnt++].iov_len = (size_t)views[i].len;
        run_start = at;
    }
    if (at > run_start) {
        iov[cnt].iov_base = block + run_start;
        iov[cnt++].iov_len = at - run_start;
    }
    tf_status status = stream_send(s, iov, cnt, done);
    PyMem_Free(block);
    PyMem_Free(iov);
    return status;
}

static PyObject *
send_many(Connection *c, PyObject *iterable)
{
    PyObject *sock = open_socket(c);
    if (sock == NULL) {
        return NULL;
    }
    PyObject *items = PySequence_Fast(iterable, "send_many() takes an iterable of bytes-like objects");
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    PyObject **objs = PySequence_Fast_ITEMS(items);
    Py_buffer views[BATCH];
    Py_ssize_t total_frames = 0, held = 0;
    size_t total_bytes = 0;
    PyObject *result = NULL;
    /* Every size is checked before any byte leaves. */
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer v;
        if (PyObject_GetBuffer(objs[i], &v, PyBUF_SIMPLE) < 0) {
            goto done;
        }
        Py_ssize_t len = v.len;
        PyBuffer_Release(&v);
        if ((size_t)len > TF_MAX_SIZE) {
            raise_too_large_to_send(c->st, len);
            goto done;
        }
        total_bytes += TF_HEADER_SIZE + (size_t)len;
    }
    Stream s;
    if (stream_open(&s, c->st, sock) < 0) {
        goto done;
    }
    size_t sent = 0;
    tf_status status = TF_OK;
    int nomem = 0;
    for (Py_ssize_t lo = 0; lo < n && status == TF_OK; lo += BATCH) {
        Py_ssize_t count = n - lo < BATCH ? n - lo : BATCH;
        for (held = 0; held < count; held++) {
            if (PyObject_GetBuffer(objs[lo + held], &views[held], PyBUF_SIMPLE) < 0) {
                status = TF_ABORTED;
                break;
            }
        }
        if (status == TF_OK) {
            status = send_batch(&s, views, count, &sent, &nomem);
            if (status == TF_OK) {
                total_frames += count;
            }
        }
        for (Py_ssize_t i = 0; i < held; i++) {
            PyBuffer_Release(&views[i]);
        }
        held = 0;
    }
    if (nomem) {
        PyErr_NoMemory();
    }
    else if (status != TF_OK) {
        PyObject *expected = PyLong_FromSize_t(total_bytes);
        if (expected != NULL) {
            Progress p = {"frames passed to send_many()", "", 0, sent, expected, 0};
            raise_send_failure(&s, status, &p);
            Py_DECREF(expected);
        }
    }
    if (stream_close(&s) == 0 && status == TF_OK) {
        result = PyLong_FromSsize_t(total_frames);
    }
done:
    Py_DECREF(items);
    return result;
}

/* -------------------------------------------------------------- methods */

static PyObject *
connection_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "max_size", NULL};
    PyObject *sock;
    Py_ssize_t max_size = (Py_ssize_t)TF_MAX_SIZE;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$n:Connection", kwlist, &sock, &max_size) ||
        non_negative("max_size", max_size) < 0) {
        return NULL;
    }
    module_state *st = state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (is_connection(st, sock)) {
        PyErr_SetString(PyExc_TypeError, "Connection() takes a socket, not a Connection");
        return NULL;
    }
    Connection *c = (Connection *)type->tp_alloc(type, 0);
    if (c == NULL) {
        return NULL;
    }
    c->sock = Py_NewRef(sock);
    c->st = st;
    c->max_size = max_size;
    c->readers = 0;
    tf_decoder_init(&c->dec, (size_t)max_size);
    return (PyObject *)c;
}

static int
connection_traverse(Connection *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->sock);
    return 0;
}

static int
connection_clear(Connection *c)
{
    Py_CLEAR(c->sock);
    return 0;
}

static void
connection_dealloc(Connection *c)
{
    PyTypeObject *type = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    connection_clear(c);
    tf_decoder_free(&c->dec);
    type->tp_free((PyObject *)c);
    Py_DECREF(type);
}

static PyObject *
c_read_bytes(Connection *c, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t max_size;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs != 0 || nkw > 1 ||
        (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "max_size") != 0)) {
        PyErr_SetString(PyExc_TypeError, "read_bytes() takes only the keyword argument max_size");
        return NULL;
    }
    if (size_arg(nkw == 1 ? args[0] : NULL, "max_size", c->max_size, &max_size) < 0) {
        return NULL;
    }
    return read_frame_buffered(c, max_size, 0);
}

static PyObject *
c_send_bytes(Connection *c, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *r = connection_send_frame((PyObject *)c, view.buf, view.len);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *
c_receive_all(Connection *c, PyObject *arg)
{
    Py_ssize_t n;
    if (size_arg(arg, "n", 0, &n) < 0 || open_socket(c) == NULL) {
        return NULL;
    }
    if (tf_decoder_buffered(&c->dec) >= (size_t)n) {
        PyObject *result = PyBytes_FromStringAndSize((const char *)tf_decoder_head(&c->dec), n);
        if (result != NULL) {
            tf_decoder_consume(&c->dec, (size_t)n);
        }
        return result;
    }
    Stream s;
    if (stream_open(&s, c->st, c->sock) < 0) {
        return NULL;
    }
    PyObject *result = take_then_receive(c, &s, 0, (size_t)n, n, "data");
    if (stream_close(&s) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

static PyObject *
c_receive_into(Connection *c, PyObject *arg)
{
    if (open_socket(c) == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE) < 0) {
        return NULL;
    }
    int r = receive_exact(c, view.buf, (size_t)view.len);
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    return r < 0 ? NULL : PyLong_FromSsize_t(len);
}

static PyObject *
c_send_all(Connection *c, PyObject *data)
{
    PyObject *sock = open_socket(c);
    if (sock == NULL) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *r = send_all_buffer(c->st, sock, &view);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *
c_fileno(Connection *c, PyObject *unused)
{
    (void)unused;
    if (c->sock == NULL) {
        return PyLong_FromLong(-1);
    }
    return PyObject_CallMethod(c->sock, "fileno", NULL);
}

static PyObject *
c_close(Connection *c, PyObject *unused)
{
    (void)unused;
    if (c->readers == 0) {
        tf_decoder_free(&c->dec);
    }
    PyObject *sock = c->sock;
    if (sock == NULL) {
        Py_RETURN_NONE;
    }
    c->sock = NULL;
    PyObject *r = PyObject_CallMethod(sock, "close", NULL);
    Py_DECREF(sock);
    return r;
}

static PyObject *
c_enter(Connection *c, PyObject *unused)
{
    (void)unused;
    if (open_socket(c) == NULL) {
        return NULL;
    }
    return Py_NewRef((PyObject *)c);
}

static PyObject *
c_exit(Connection *c, PyObject *args)
{
    (void)args;
    PyObject *r = c_close(c, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
connection_iternext(Connection *c)
{
    return read_frame_buffered(c, c->max_size, 1);
}

static PyObject *
get_socket(Connection *c, void *closure)
{
    (void)closure;
    PyObject *sock = open_socket(c);
    return sock ? Py_NewRef(sock) : NULL;
}

static PyObject *
get_closed(Connection *c, void *closure)
{
    (void)closure;
    return PyBool_FromLong(c->sock == NULL);
}

static PyObject *
get_buffered(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(tf_decoder_buffered(&c->dec));
}

static PyObject *
get_max_size(Connection *c, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(c->max_size);
}

static PyMethodDef connection_methods[] = {
    {"read_bytes", (PyCFunction)(void (*)(void))c_read_bytes, METH_FASTCALL | METH_KEYWORDS,
     "read_bytes($self, /, *, max_size=None)\n--\n\n"
     "Receive one frame's payload.  Frames already buffered cost no system\n"
     "call; max_size defaults to the Connection's."},
    {"send_bytes", (PyCFunction)c_send_bytes, METH_O,
     "send_bytes($self, data, /)\n--\n\nSend data as one frame (one system call)."},
    {"send_many", (PyCFunction)send_many, METH_O,
     "send_many($self, frames, /)\n--\n\n"
     "Send every item of an iterable of bytes-like objects as a frame each,\n"
     "hundreds per system call.  Returns how many frames were sent.  Every\n"
     "size is checked (FrameTooLarge) before any byte is sent."},
    {"receive_all", (PyCFunction)c_receive_all, METH_O,
     "receive_all($self, n, /)\n--\n\nExactly n bytes: buffered ones first."},
    {"receive_into", (PyCFunction)c_receive_into, METH_O,
     "receive_into($self, buffer, /)\n--\n\nFill the writable buffer; return its length."},
    {"send_all", (PyCFunction)c_send_all, METH_O,
     "send_all($self, data, /)\n--\n\nSend every byte of data (no framing)."},
    {"fileno", (PyCFunction)c_fileno, METH_NOARGS,
     "fileno($self, /)\n--\n\nThe socket's file descriptor, or -1 once closed."},
    {"close", (PyCFunction)c_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose the socket and drop the buffer.  Safe to repeat."},
    {"__enter__", (PyCFunction)c_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)c_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef connection_getset[] = {
    {"socket", (getter)get_socket, NULL, "The socket this Connection owns.", NULL},
    {"closed", (getter)get_closed, NULL, "True once close() was called.", NULL},
    {"buffered", (getter)get_buffered, NULL,
     "Bytes received but not yet returned (read ahead of the current frame).", NULL},
    {"max_size", (getter)get_max_size, NULL, "The default max_size of read_bytes().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(connection_doc,
"Connection(sock, *, max_size=99999999)\n--\n\n"
"A socket plus a receive buffer, for fast framed conversations.\n\n"
"One recv() may bring many frames, so small messages cost one system call\n"
"per batch; large payloads are received straight into their bytes object;\n"
"send_many() sends many frames in one call.  `for payload in conn:` yields\n"
"frames until the peer closes cleanly between frames.\n\n"
"The Connection owns the socket: close it through the Connection, and do\n"
"not read from the socket directly any more (bytes may be buffered here).\n"
"The module's functions accept a Connection and use its buffer.\n"
"Timeouts, signals, the GIL and TLS behave as with the module's functions,\n"
"and a timeout loses nothing: received bytes stay buffered and the next\n"
"read continues.");

static PyType_Slot connection_slots[] = {
    {Py_tp_doc, (void *)connection_doc},
    {Py_tp_new, connection_new},
    {Py_tp_dealloc, connection_dealloc},
    {Py_tp_traverse, connection_traverse},
    {Py_tp_clear, connection_clear},
    {Py_tp_methods, connection_methods},
    {Py_tp_getset, connection_getset},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, connection_iternext},
    {0, NULL},
};

PyType_Spec connection_spec = {
    .name = "tcpframe._tcpframe.Connection",
    .basicsize = sizeof(Connection),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = connection_slots,
};
