/* tcpframe._tcpframe: the module -- its functions, argument parsing and
 * multi-phase initialisation.  The top of the binding: it uses the types
 * (binding_connection.c, binding_decoder.c), which use the socket driving
 * (binding_stream.c), which uses the plain-C core (frame_*.c). */
#include "binding_types.h"

#include <string.h>

/* A Connection passed to a module function: its method does the work, so
 * bytes it has buffered are not skipped, and its locks are taken. */
static PyObject *
connection_method(PyObject *conn, const char *name, PyObject *arg)
{
    return PyObject_CallMethod(conn, name, "O", arg);
}

static PyObject *
send_frame_any(module_state *st, PyObject *sock, const char *data, Py_ssize_t len)
{
    return is_connection(st, sock) ? connection_send_frame(sock, data, len)
                                   : send_frame(st, sock, data, len);
}

/* max_size_obj: NULL or None for the default -- a Connection's own. */
static PyObject *
read_frame_any(module_state *st, PyObject *sock, PyObject *max_size_obj)
{
    Py_ssize_t max_size;
    if (is_connection(st, sock)) {
        return max_size_arg(max_size_obj, -1, &max_size) < 0
            ? NULL : connection_read_frame(sock, max_size);
    }
    return max_size_arg(max_size_obj, (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0
        ? NULL : read_frame(st, sock, max_size);
}

/* ------------------------------------------------------------- arguments */

/* METH_FASTCALL|METH_KEYWORDS parsing for our small signatures: `nreq`
 * required positional-only arguments, then optional ones named in `names`,
 * of which the first `npos_opt` may also come by position.  out[] has a
 * slot per parameter; optional slots keep their NULL (default) if absent. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           Py_ssize_t nreq, Py_ssize_t npos_opt, const char *const *names, PyObject **out)
{
    if (nargs < nreq || nargs > nreq + npos_opt) {
        if (npos_opt == 0) {
            PyErr_Format(PyExc_TypeError, "%s() takes %zd positional argument%s (%zd given)",
                         fname, nreq, nreq == 1 ? "" : "s", nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes from %zd to %zd positional arguments (%zd given)",
                         fname, nreq, nreq + npos_opt, nargs);
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t slot = -1;
        for (Py_ssize_t j = 0; names[j] != NULL; j++) {
            if (PyUnicode_CompareWithASCIIString(key, names[j]) == 0) {
                slot = nreq + j;
                break;
            }
        }
        if (slot < 0) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                         fname, key);
            return -1;
        }
        if (slot < nargs) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument %R",
                         fname, key);
            return -1;
        }
        out[slot] = args[nargs + k];
    }
    return 0;
}

static int
no_keywords(const char *fname, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", fname);
        return -1;
    }
    return 0;
}

static const char *
encoding_arg(PyObject *obj)
{
    if (obj == NULL) {
        return "utf-8";
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "encoding must be a str, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(obj);
}

/* --------------------------------------------------------- the functions */

PyDoc_STRVAR(send_all_doc,
"send_all($module, sock, data, /)\n--\n\n"
"Send every byte of data, a bytes-like object, without copying it.\n\n"
"The lesson's send_all_bytes(), done in C.  The socket's timeout is one\n"
"deadline for the whole call; on expiry TransferTimeout.sent says how many\n"
"bytes left.  Alias: send_all_bytes.");

static PyObject *
py_send_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("send_all", kwnames) < 0 ||
        parse_args("send_all", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    module_state *st = get_state(module);
    if (is_connection(st, a[0])) {
        return connection_method(a[0], "send_all", a[1]);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = send_all_to(st, a[0], view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(receive_all_doc,
"receive_all($module, sock, n, /)\n--\n\n"
"Receive exactly n bytes and return them as bytes.\n\n"
"The lesson's receive_all_bytes(), done in C.  Raises ConnectionClosed\n"
"(with .partial) if the peer closes first, TransferTimeout if the socket's\n"
"timeout passes first.  Aliases: receive_all_bytes, read_all_bytes.");

static PyObject *
py_receive_all(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    Py_ssize_t n;
    if (no_keywords("receive_all", kwnames) < 0 ||
        parse_args("receive_all", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0 ||
        size_arg(a[1], "n", 0, &n) < 0) {
        return NULL;
    }
    module_state *st = get_state(module);
    if (is_connection(st, a[0])) {
        return connection_method(a[0], "receive_all", a[1]);
    }
    return receive_all_from(st, a[0], n);
}

PyDoc_STRVAR(receive_into_doc,
"receive_into($module, sock, buffer, /)\n--\n\n"
"Fill the whole writable buffer from the socket; return its length in bytes.\n\n"
"Zero-copy: bytes go from the kernel straight into buffer (a bytearray,\n"
"memoryview, array, mmap...).  On ConnectionClosed or TransferTimeout the\n"
"bytes that did arrive are at the start of buffer and in .partial.");

static PyObject *
py_receive_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("receive_into", kwnames) < 0 ||
        parse_args("receive_into", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    if (is_connection(get_state(module), a[0])) {
        return connection_method(a[0], "receive_into", a[1]);
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_WRITABLE) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Format(PyExc_TypeError,
                         "receive_into() needs a writable buffer (bytearray, "
                         "memoryview of one, array...), not %.100s; to get new "
                         "bytes use receive_all()", Py_TYPE(a[1])->tp_name);
        }
        return NULL;
    }
    int r = receive_into_from(get_state(module), a[0], &view);
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    return r < 0 ? NULL : PyLong_FromSsize_t(len);
}

PyDoc_STRVAR(send_bytes_doc,
"send_bytes($module, sock, data, /)\n--\n\n"
"Send data as one frame: 8 ASCII digits of length, then the bytes.\n\n"
"Header and payload leave in one system call (no Nagle stall) and the\n"
"payload is not copied.  A payload over MAX_SIZE raises FrameTooLarge\n"
"before any byte is sent.");

static PyObject *
py_send_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if (no_keywords("send_bytes", kwnames) < 0 ||
        parse_args("send_bytes", args, nargs, NULL, 2, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = send_frame_any(get_state(module), a[0], view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(read_bytes_doc,
"read_bytes($module, sock, /, *, max_size=99999999)\n--\n\n"
"Receive one frame and return its payload as bytes.\n\n"
"Raises FrameError for a header that is not 8 ASCII digits, FrameTooLarge\n"
"(before reading any payload) when the announced length exceeds max_size,\n"
"ConnectionClosed when the peer closes (.expected is None if it closed\n"
"cleanly between frames), TransferTimeout when the socket's timeout, one\n"
"deadline for the whole frame, passes.");

static const char *const read_kw[] = {"max_size", NULL};

static PyObject *
py_read_bytes(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2] = {NULL, NULL};
    if (parse_args("read_bytes", args, nargs, kwnames, 1, 0, read_kw, a) < 0) {
        return NULL;
    }
    return read_frame_any(get_state(module), a[0], a[1]);
}

PyDoc_STRVAR(send_string_doc,
"send_string($module, sock, text, /, encoding='utf-8')\n--\n\n"
"Send text, encoded, as one frame (the lesson's send_string).\n\n"
"The header counts encoded bytes, not characters, as the lesson's does.");

static const char *const send_string_kw[] = {"encoding", NULL};

static PyObject *
py_send_string(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3] = {NULL, NULL, NULL};
    if (parse_args("send_string", args, nargs, kwnames, 2, 1, send_string_kw, a) < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(a[1])) {
        PyErr_Format(PyExc_TypeError,
                     "send_string() sends text: expected str, got %.100s (use "
                     "send_bytes() for bytes)", Py_TYPE(a[1])->tp_name);
        return NULL;
    }
    const char *encoding = encoding_arg(a[2]);
    if (encoding == NULL) {
        return NULL;
    }
    PyObject *encoded = PyUnicode_AsEncodedString(a[1], encoding, "strict");
    if (encoded == NULL) {
        return NULL;
    }
    PyObject *result = send_frame_any(get_state(module), a[0], PyBytes_AS_STRING(encoded),
                                      PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return result;
}

PyDoc_STRVAR(read_string_doc,
"read_string($module, sock, /, *, max_size=99999999, encoding='utf-8')\n--\n\n"
"Receive one frame and return its payload decoded as str.\n\n"
"Unlike the lesson's read_string, which returns bytes, this returns str.\n"
"Errors as read_bytes(); undecodable bytes raise UnicodeDecodeError (the\n"
"frame is consumed, the stream stays in sync).");

static const char *const read_string_kw[] = {"max_size", "encoding", NULL};

static PyObject *
py_read_string(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3] = {NULL, NULL, NULL};
    if (parse_args("read_string", args, nargs, kwnames, 1, 0, read_string_kw, a) < 0) {
        return NULL;
    }
    const char *encoding = encoding_arg(a[2]);
    if (encoding == NULL) {
        return NULL;
    }
    PyObject *payload = read_frame_any(get_state(module), a[0], a[1]);
    if (payload == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_Decode(PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                                      encoding, "strict");
    Py_DECREF(payload);
    return text;
}

PyDoc_STRVAR(encode_header_doc,
"encode_header($module, n, /)\n--\n\n"
"Return the 8-byte header announcing a payload of n bytes, e.g. b'00000005'.");

static PyObject *
py_encode_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    Py_ssize_t n;
    if (no_keywords("encode_header", kwnames) < 0 ||
        parse_args("encode_header", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0 ||
        size_arg(a[0], "n", 0, &n) < 0) {
        return NULL;
    }
    unsigned char header[TF_HEADER_SIZE];
    if (tf_encode_header((size_t)n, header) < 0) {
        raise_too_large_to_send(get_state(module), n);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)header, TF_HEADER_SIZE);
}

PyDoc_STRVAR(decode_header_doc,
"decode_header($module, header, /)\n--\n\n"
"Return the payload length an 8-byte header announces.\n\n"
"Strict: exactly 8 ASCII digits.  Anything else -- a sign, '_', a space, a\n"
"non-ASCII digit, the wrong length -- raises FrameError (int() would accept\n"
"several of these).");

static PyObject *
py_decode_header(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (no_keywords("decode_header", kwnames) < 0 ||
        parse_args("decode_header", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    size_t n;
    if (view.len != TF_HEADER_SIZE) {
        PyObject *raw = PyBytes_FromStringAndSize(view.buf, view.len);
        if (raw != NULL) {
            PyObject *msg = PyUnicode_FromFormat(
                "a frame header is exactly 8 bytes, got %zd: %R", view.len, raw);
            if (msg != NULL) {
                raise_new(get_state(module)->FrameError, "(NO)", msg, raw);
            }
            Py_DECREF(raw);
        }
    }
    else if (tf_decode_header(view.buf, &n) < 0) {
        raise_bad_header(get_state(module), view.buf);
    }
    else {
        result = PyLong_FromSize_t(n);
    }
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(encode_frame_doc,
"encode_frame($module, data, /)\n--\n\n"
"Return header + data as one bytes object: a whole frame, for code that\n"
"sends by other means (an event loop's transport).  Over MAX_SIZE raises\n"
"FrameTooLarge.");

static PyObject *
py_encode_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (no_keywords("encode_frame", kwnames) < 0 ||
        parse_args("encode_frame", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(a[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *frame = NULL;
    if ((size_t)view.len > TF_MAX_SIZE) {
        raise_too_large_to_send(get_state(module), view.len);
    }
    else if ((frame = PyBytes_FromStringAndSize(NULL, TF_HEADER_SIZE + view.len)) != NULL) {
        char *out = PyBytes_AS_STRING(frame);
        tf_encode_header((size_t)view.len, (unsigned char *)out);
        memcpy(out + TF_HEADER_SIZE, view.buf, (size_t)view.len);
    }
    PyBuffer_Release(&view);
    return frame;
}

PyDoc_STRVAR(encode_frames_doc,
"encode_frames($module, frames, /)\n--\n\n"
"Return every payload of the iterable as frames, one after the other, in\n"
"one bytes object (one write to a transport for a whole batch).  A payload\n"
"over MAX_SIZE raises FrameTooLarge and nothing is returned.");

static PyObject *
py_encode_frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[1];
    if (no_keywords("encode_frames", kwnames) < 0 ||
        parse_args("encode_frames", args, nargs, NULL, 1, 0, (const char *const[]){NULL}, a) < 0) {
        return NULL;
    }
    /* Our own tuple first: the iterable, and each item's __buffer__, are
     * Python code that could change a list under us.  Every buffer stays
     * exported (so fixed in size) until the copy is done. */
    PyObject *items = PySequence_Tuple(a[0]);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items), got = 0, total = 0;
    Py_buffer *views = PyMem_New(Py_buffer, n > 0 ? n : 1);
    PyObject *out = NULL;
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(items, got), &views[got], PyBUF_SIMPLE) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if ((size_t)views[i].len > TF_MAX_SIZE) {
            raise_too_large_to_send(get_state(module), views[i].len);
            goto done;
        }
        if (total > PY_SSIZE_T_MAX - TF_HEADER_SIZE - views[i].len) {
            PyErr_NoMemory();
            goto done;
        }
        total += TF_HEADER_SIZE + views[i].len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out != NULL) {
        char *at = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++) {
            tf_encode_header((size_t)views[i].len, (unsigned char *)at);
            memcpy(at + TF_HEADER_SIZE, views[i].buf, (size_t)views[i].len);
            at += TF_HEADER_SIZE + views[i].len;
        }
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
    }
    PyMem_Free(views);
    Py_DECREF(items);
    return out;
}

#define FASTCALL_KW(name) \
    {#name, (PyCFunction)(void (*)(void))py_##name, METH_FASTCALL | METH_KEYWORDS, name##_doc}

static PyMethodDef module_methods[] = {
    FASTCALL_KW(send_all),
    FASTCALL_KW(receive_all),
    FASTCALL_KW(receive_into),
    FASTCALL_KW(send_bytes),
    FASTCALL_KW(read_bytes),
    FASTCALL_KW(send_string),
    FASTCALL_KW(read_string),
    FASTCALL_KW(encode_header),
    FASTCALL_KW(decode_header),
    FASTCALL_KW(encode_frame),
    FASTCALL_KW(encode_frames),
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------ the module */

static int
import_attr(PyObject **slot, const char *module_name, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(module_name);
    if (mod == NULL) {
        return -1;
    }
    *slot = PyObject_GetAttrString(mod, attr);
    Py_DECREF(mod);
    return *slot == NULL ? -1 : 0;
}

/* CPython's own socket.socket, found among _socket.socket's subclasses: the
 * module attribute may be another class (gevent's monkey.patch_all() puts
 * its cooperative socket there, before or after we are imported).  Only an
 * object of exactly this class has its file descriptor driven by the C
 * core; every other class -- gevent's included -- goes through its own
 * methods, so a cooperative socket never blocks its event loop. */
static PyObject *
real_socket_type(PyObject *base, PyObject *fallback)
{
    PyObject *subclasses = PyObject_CallMethod(base, "__subclasses__", NULL);
    if (subclasses == NULL) {
        return NULL;
    }
    PyObject *found = NULL;
    for (Py_ssize_t i = 0; found == NULL && i < PyList_GET_SIZE(subclasses); i++) {
        PyObject *cls = PyList_GET_ITEM(subclasses, i);
        PyObject *where = PyObject_GetAttrString(cls, "__module__");
        if (where == NULL) {
            Py_DECREF(subclasses);
            return NULL;
        }
        if (PyUnicode_Check(where) && PyUnicode_CompareWithASCIIString(where, "socket") == 0 &&
            strcmp(((PyTypeObject *)cls)->tp_name, "socket") == 0) {
            found = Py_NewRef(cls);
        }
        Py_DECREF(where);
    }
    Py_DECREF(subclasses);
    return found != NULL ? found : Py_NewRef(fallback);
}

static int
module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    if (import_attr(&st->socket_type, "socket", "socket") < 0 ||
        import_attr(&st->socket_kind, "_socket", "socket") < 0 ||
        import_attr(&st->socket_timeout, "socket", "timeout") < 0 ||
        import_attr(&st->ConnectionClosed, "tcpframe.errors", "ConnectionClosed") < 0 ||
        import_attr(&st->FrameError, "tcpframe.errors", "FrameError") < 0 ||
        import_attr(&st->FrameTooLarge, "tcpframe.errors", "FrameTooLarge") < 0 ||
        import_attr(&st->TransferTimeout, "tcpframe.errors", "TransferTimeout") < 0) {
        return -1;
    }
    if (!PyType_Check(st->socket_type) || !PyType_Check(st->socket_kind)) {
        PyErr_SetString(PyExc_TypeError, "socket.socket is not a type");
        return -1;
    }
    PyObject *real = real_socket_type(st->socket_kind, st->socket_type);
    if (real == NULL) {
        return -1;
    }
    Py_SETREF(st->socket_type, real);
    /* _socket.socket's `type` member: the kind (SOCK_STREAM...) without the
     * Python property that socket.socket puts over it. */
    PyObject *kind = PyDict_GetItemString(((PyTypeObject *)st->socket_kind)->tp_dict, "type");
    if (kind == NULL || Py_TYPE(kind)->tp_descr_get == NULL) {
        PyErr_SetString(PyExc_TypeError, "_socket.socket has no `type` member");
        return -1;
    }
    Py_SETREF(st->socket_kind, Py_NewRef(kind));
    st->ConnectionType = PyType_FromModuleAndSpec(module, &connection_spec, NULL);
    st->DecoderType = PyType_FromModuleAndSpec(module, &decoder_spec, NULL);
    st->ReceiverType = PyType_FromModuleAndSpec(module, &receiver_spec, NULL);
    st->WindowType = PyType_FromModuleAndSpec(module, &window_spec, NULL);
#if PY_VERSION_HEX < 0x030A0000
    /* What Py_TPFLAGS_DISALLOW_INSTANTIATION (3.10+) does: only
     * Receiver.get_buffer() makes windows. */
    if (st->WindowType != NULL) {
        ((PyTypeObject *)st->WindowType)->tp_new = NULL;
    }
#endif
    if (st->ConnectionType == NULL || st->DecoderType == NULL || st->ReceiverType == NULL ||
        st->WindowType == NULL ||
        PyModule_AddType(module, (PyTypeObject *)st->ConnectionType) < 0 ||
        PyModule_AddType(module, (PyTypeObject *)st->DecoderType) < 0 ||
        PyModule_AddType(module, (PyTypeObject *)st->ReceiverType) < 0 ||
        PyModule_AddType(module, (PyTypeObject *)st->WindowType) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "HEADER_SIZE", TF_HEADER_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SIZE", (long)TF_MAX_SIZE) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_state(module);
    Py_VISIT(st->socket_type);
    Py_VISIT(st->socket_kind);
    Py_VISIT(st->socket_timeout);
    Py_VISIT(st->ConnectionClosed);
    Py_VISIT(st->FrameError);
    Py_VISIT(st->FrameTooLarge);
    Py_VISIT(st->TransferTimeout);
    Py_VISIT(st->ConnectionType);
    Py_VISIT(st->DecoderType);
    Py_VISIT(st->ReceiverType);
    Py_VISIT(st->WindowType);
    return 0;
}

static int
module_clear(PyObject *module)
{
    module_state *st = get_state(module);
    Py_CLEAR(st->socket_type);
    Py_CLEAR(st->socket_kind);
    Py_CLEAR(st->socket_timeout);
    Py_CLEAR(st->ConnectionClosed);
    Py_CLEAR(st->FrameError);
    Py_CLEAR(st->FrameTooLarge);
    Py_CLEAR(st->TransferTimeout);
    Py_CLEAR(st->ConnectionType);
    Py_CLEAR(st->DecoderType);
    Py_CLEAR(st->ReceiverType);
    Py_CLEAR(st->WindowType);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    /* No Py_mod_gil slot: the Connection's locks order calls, but its
     * fields, the Decoder and the module state rely on the GIL between
     * them, so a free-threaded build must keep the GIL on for us. */
    {0, NULL},
};

struct PyModuleDef tcpframe_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tcpframe._tcpframe",
    .m_doc = "C core of tcpframe: TCP message framing (8 ASCII digits, then payload).",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__tcpframe(void)
{
    return PyModuleDef_Init(&tcpframe_module_def);
}
