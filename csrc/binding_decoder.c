/* tcpframe.Decoder: the sans-IO frame decoder (frame_decoder.c) for event
 * loops and anything else that gets its bytes by other means.
 *
 *     decoder = Decoder(max_size=1 << 20)
 *     for payload in decoder.feed(chunk):     # any chunking at all
 *         handle(payload)
 */
#include "binding_types.h"

#include "frame_decoder.h"

typedef struct {
    PyObject_HEAD
    module_state *st;        /* alive as long as our type, which we hold */
    tf_decoder dec;
} Decoder;

static PyObject *
decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_size", NULL};
    PyObject *max_size_obj = NULL;
    Py_ssize_t max_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$O:Decoder", kwlist, &max_size_obj) ||
        max_size_arg(max_size_obj, (Py_ssize_t)TF_MAX_SIZE, &max_size) < 0) {
        return NULL;
    }
    module_state *st = state_from_type(type, decoder_new);
    if (st == NULL) {
        return NULL;
    }
    Decoder *d = (Decoder *)type->tp_alloc(type, 0);
    if (d == NULL) {
        return NULL;
    }
    d->st = st;
    tf_decoder_init(&d->dec, (size_t)max_size);
    return (PyObject *)d;
}

static void
decoder_dealloc(Decoder *d)
{
    PyTypeObject *type = Py_TYPE(d);
    tf_decoder_free(&d->dec);
    type->tp_free((PyObject *)d);
    Py_DECREF(type);
}

/* Append every whole frame to `out`.  A bad or oversized header raises only
 * when no frame came before it in this call: those are returned first, and
 * the header, left in place, raises on the next call. */
static int
take_frames(Decoder *d, PyObject *out)
{
    for (;;) {
        const unsigned char *payload;
        size_t len, need;
        tf_dec_result r = tf_decoder_next(&d->dec, &payload, &len, &need);
        if (r == TF_DEC_NEED_MORE) {
            return 0;
        }
        if (r != TF_DEC_FRAME) {
            if (PyList_GET_SIZE(out) > 0) {
                return 0;
            }
            if (r == TF_DEC_BAD_HEADER) {
                raise_bad_header(d->st, tf_decoder_head(&d->dec));
            }
            else {
                raise_too_large_to_receive(d->st, tf_decoder_head(&d->dec), len,
                                           (Py_ssize_t)d->dec.max_size);
            }
            return -1;
        }
        PyObject *frame = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)len);
        if (frame == NULL || PyList_Append(out, frame) < 0) {
            Py_XDECREF(frame);
            return -1;
        }
        Py_DECREF(frame);
    }
}

static PyObject *
decoder_feed(Decoder *d, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int fed = tf_decoder_feed(&d->dec, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    if (fed < 0) {
        return PyErr_NoMemory();
    }
    PyObject *out = PyList_New(0);
    if (out != NULL && take_frames(d, out) < 0) {
        Py_CLEAR(out);
    }
    return out;
}

static PyObject *
get_buffered(Decoder *d, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(tf_decoder_buffered(&d->dec));
}

static PyObject *
get_needed(Decoder *d, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(tf_decoder_needed(&d->dec));
}

static PyMethodDef decoder_methods[] = {
    {"feed", (PyCFunction)decoder_feed, METH_O,
     "feed($self, data, /)\n--\n\n"
     "Add bytes; return the list of payloads of every frame now complete\n"
     "(often empty).  Raises FrameError / FrameTooLarge at a bad header, after\n"
     "returning the frames before it.  Each size is checked when its header\n"
     "is whole, before its payload is waited for."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef decoder_getset[] = {
    {"buffered", (getter)get_buffered, NULL, "Bytes held: a frame not yet complete.", NULL},
    {"needed", (getter)get_needed, NULL,
     "At least how many more bytes the next frame needs (0 at a bad header).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(decoder_doc,
"Decoder(*, max_size=99999999)\n--\n\n"
"A sans-IO frame decoder: feed() it bytes however they were chunked, get\n"
"whole frames' payloads back.  It never touches a socket: use it from an\n"
"event loop, a test, or anything that gets its bytes by other means.");

static PyType_Slot decoder_slots[] = {
    {Py_tp_doc, (void *)decoder_doc},
    {Py_tp_new, decoder_new},
    {Py_tp_dealloc, decoder_dealloc},
    {Py_tp_methods, decoder_methods},
    {Py_tp_getset, decoder_getset},
    {0, NULL},
};

PyType_Spec decoder_spec = {
    .name = "tcpframe._tcpframe.Decoder",
    .basicsize = sizeof(Decoder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = decoder_slots,
};
