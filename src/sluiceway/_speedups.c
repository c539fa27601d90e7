/* C helpers for the hot spots a profile showed pure Python cannot carry.
 *
 * apply_mask(data, mask) -> bytes: XOR data with the repeated 4-byte
 * WebSocket masking key (RFC 6455 §5.3). In pure Python (big-int XOR) a
 * 64 KiB echo spends over 95% of its time here; this does 16 bytes a step.
 *
 * Optional: sluiceway.websocket.frames falls back to the pure-Python
 * function when this module did not build (setup.py marks it optional).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *
apply_mask(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer data, mask;
    PyObject *result = NULL;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "apply_mask() takes exactly 2 arguments");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &mask, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL)
        goto done;
    {
        const unsigned char *src = (const unsigned char *)data.buf;
        const unsigned char *key = (const unsigned char *)mask.buf;
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(result);
        Py_ssize_t n = data.len, i = 0;
        /* A 16-byte key block lets the compiler vectorise the main loop. */
        unsigned char k16[16];
        for (int j = 0; j < 16; j++)
            k16[j] = key[j & 3];
        for (; i + 16 <= n; i += 16) {
            for (int j = 0; j < 16; j++)
                dst[i + j] = src[i + j] ^ k16[j];
        }
        for (; i < n; i++)
            dst[i] = src[i] ^ key[i & 3];
    }
done:
    PyBuffer_Release(&mask);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_FASTCALL,
     "XOR data with the repeated 4-byte mask; returns bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "sluiceway._speedups", NULL, -1, speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
