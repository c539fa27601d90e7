/* A strict reader for the common request head, in one call instead of llhttp's callbacks.
 *
 * parse_head(data, start, max_line, max_head) reads one request head that
 * starts at data[start] and returns
 *
 *     (method: str, target: bytes, version: str, headers: list, keep_alive: bool, end: int)
 *
 * with header names lowercased and values as llhttp gives them (leading
 * whitespace dropped, the rest kept), or None when the head is not one it
 * takes. Then the caller feeds the same bytes to llhttp (httptools), which
 * either parses them or rejects them with its own error.
 *
 * Why: llhttp is fast, but httptools reports a head through one Python call
 * per part (the message start, the target, every field, the end), and on a
 * small request those calls cost more than the parsing (docs/performance.md,
 * session 8). The common request, a bodyless GET with a handful of fields,
 * is simple enough to read in C at once.
 *
 * What it takes is a strict subset of what llhttp accepts, so it can never
 * accept what the fallback would refuse (tests/http1/test_head_reader.py
 * compares the two on many generated heads):
 *
 *   - one of GET HEAD POST PUT DELETE PATCH OPTIONS, one space, an
 *     origin-form target of visible ASCII without '#', one space,
 *     HTTP/1.1 or HTTP/1.0, CRLF, at the very start (no leading empty line);
 *   - fields "token:" OWS value CRLF, the value visible ASCII, space and tab
 *     only (no obs-text, no control characters, no obs-fold, nothing before
 *     the colon), then CRLF;
 *   - no field that changes framing or the connection's fate beyond a plain
 *     close: Content-Length, Transfer-Encoding, Expect, TE, Upgrade and
 *     Proxy-Connection are left to llhttp, and so is a Connection field
 *     other than exactly one "close" or "keep-alive" (any case);
 *   - exactly one Host on HTTP/1.1, at most one on HTTP/1.0, and its value a
 *     plain host: RFC 3986 reg-name bytes without pct-encoding (which covers
 *     IPv4), then an optional ":" and digits, with no trailing whitespace.
 *     Other values (an IP literal, '%', a space, '@') go to llhttp's path,
 *     where http1/wire.py's check_host decides (a 400 for the invalid ones);
 *     every value taken here passes that check;
 *   - the head complete in data, the target at most max_line bytes, and the
 *     fields (name + value + 4 each, as the protocol counts them) at most
 *     max_head bytes; beyond those llhttp's path answers 414/431.
 *
 * Such a request has no body (RFC 9112 section 6.3: no Content-Length and
 * no Transfer-Encoding), so its end is the end of its head: no framing to
 * disagree about.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define CONNECTION_NONE 0
#define CONNECTION_CLOSE 1
#define CONNECTION_KEEP_ALIVE 2

/* Byte classes, filled in at import. */
static unsigned char is_tchar[256];  /* RFC 9110 section 5.6.2 token characters */
static unsigned char is_target[256]; /* visible ASCII but '#' */
static unsigned char is_value[256];  /* visible ASCII, space, tab */
static unsigned char is_host[256];   /* RFC 3986 unreserved and sub-delims */

static PyObject *method_get, *method_head, *method_post, *method_put, *method_delete,
    *method_patch, *method_options, *version_11, *version_10;

static void
fill_classes(void)
{
    const char *specials = "!#$%&'*+-.^_`|~";
    const char *host_specials = "-._~!$&'()*+,;=";
    for (int c = 0; c < 256; c++) {
        int visible = c > 0x20 && c < 0x7f;
        is_tchar[c] = (unsigned char)((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                      (c >= 'A' && c <= 'Z') ||
                                      (c != 0 && strchr(specials, c) != NULL));
        is_target[c] = (unsigned char)(visible && c != '#');
        is_value[c] = (unsigned char)(visible || c == ' ' || c == '\t');
        is_host[c] = (unsigned char)((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                                     (c >= 'A' && c <= 'Z') ||
                                     (c != 0 && strchr(host_specials, c) != NULL));
    }
}

/* The method at p (followed by its space), or NULL. Sets *size to its length. */
static PyObject *
read_method(const char *p, const char *end, Py_ssize_t *size)
{
    Py_ssize_t left = end - p;
#define METHOD(text, object)                                                       \
    if (left > (Py_ssize_t)sizeof(text) - 1 && memcmp(p, text " ", sizeof(text)) == 0) { \
        *size = sizeof(text) - 1;                                                  \
        return object;                                                             \
    }
    if (left < 4)
        return NULL;
    switch (p[0]) {
    case 'G':
        METHOD("GET", method_get)
        break;
    case 'H':
        METHOD("HEAD", method_head)
        break;
    case 'P':
        METHOD("POST", method_post)
        METHOD("PUT", method_put)
        METHOD("PATCH", method_patch)
        break;
    case 'D':
        METHOD("DELETE", method_delete)
        break;
    case 'O':
        METHOD("OPTIONS", method_options)
        break;
    }
#undef METHOD
    return NULL;
}

/* A Host value this reader takes: reg-name bytes, then ":" and digits if any. */
static int
is_plain_host(const char *p, Py_ssize_t size)
{
    Py_ssize_t i = 0;
    while (i < size && is_host[(unsigned char)p[i]])
        i++;
    if (i < size && p[i] == ':') {
        i++;
        while (i < size && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    return i == size;
}

static int
equals_lower(const char *p, Py_ssize_t size, const char *lower)
{
    Py_ssize_t n = (Py_ssize_t)strlen(lower);
    if (size != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[i])
            return 0;
    }
    return 1;
}

/* What a lowercased field name means to the reader. */
enum field_kind { FIELD_OTHER, FIELD_HOST, FIELD_CONNECTION, FIELD_DECLINE };

#define FIELD(text, kind) {text, sizeof(text) - 1, kind}
static const struct {
    const char *name;
    Py_ssize_t size;
    enum field_kind kind;
} known_fields[] = {
    FIELD("host", FIELD_HOST),
    FIELD("connection", FIELD_CONNECTION),
    FIELD("content-length", FIELD_DECLINE),
    FIELD("transfer-encoding", FIELD_DECLINE),
    FIELD("expect", FIELD_DECLINE),
    FIELD("te", FIELD_DECLINE),
    FIELD("upgrade", FIELD_DECLINE),
    FIELD("proxy-connection", FIELD_DECLINE), /* llhttp reads it as Connection */
};
#undef FIELD

static enum field_kind
field_kind(const char *name, Py_ssize_t size)
{
    for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0]; i++) {
        if (known_fields[i].size == size && memcmp(name, known_fields[i].name, size) == 0)
            return known_fields[i].kind;
    }
    return FIELD_OTHER;
}

static PyObject *
parse_head(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_head() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_Check(data))
        Py_RETURN_NONE;
    Py_ssize_t numbers[3];
    for (int i = 0; i < 3; i++) {
        numbers[i] = PyLong_AsSsize_t(args[i + 1]);
        if (numbers[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    Py_ssize_t start = numbers[0], max_line = numbers[1], max_head = numbers[2];
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (start < 0 || start >= len)
        Py_RETURN_NONE;
    const char *p = buf + start;
    const char *end = buf + len;

    /* The request line. */
    Py_ssize_t method_size;
    PyObject *method = read_method(p, end, &method_size);
    if (method == NULL)
        Py_RETURN_NONE;
    p += method_size + 1;
    if (p >= end || *p != '/')
        Py_RETURN_NONE;
    const char *target = p;
    while (p < end && is_target[(unsigned char)*p])
        p++;
    Py_ssize_t target_size = p - target;
    if (target_size > max_line || end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0 ||
        (p[8] != '1' && p[8] != '0') || p[9] != '\r' || p[10] != '\n')
        Py_RETURN_NONE;
    int http11 = p[8] == '1';
    p += 11;

    /* The fields, up to the empty line. */
    PyObject *headers = PyList_New(0);
    if (headers == NULL)
        return NULL;
    int host_count = 0;
    int connection = CONNECTION_NONE;
    Py_ssize_t head_bytes = 0;
    for (;;) {
        if (end - p < 2)
            goto decline; /* incomplete */
        if (p[0] == '\r') {
            if (p[1] != '\n')
                goto decline;
            p += 2;
            break;
        }
        const char *name = p;
        while (p < end && is_tchar[(unsigned char)*p])
            p++;
        Py_ssize_t name_size = p - name;
        /* An empty name covers a line that starts with whitespace (obs-fold)
           or a bare LF; anything but ':' after the token covers whitespace
           before the colon and invalid name bytes. */
        if (name_size == 0 || p >= end || *p != ':')
            goto decline;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *value = p;
        while (p < end && is_value[(unsigned char)*p])
            p++;
        Py_ssize_t value_size = p - value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            goto decline;
        p += 2;
        head_bytes += name_size + value_size + 4;
        if (head_bytes > max_head)
            goto decline;

        PyObject *lowered = PyBytes_FromStringAndSize(NULL, name_size);
        if (lowered == NULL)
            goto error;
        char *out = PyBytes_AS_STRING(lowered);
        for (Py_ssize_t i = 0; i < name_size; i++) {
            char c = name[i];
            out[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        switch (field_kind(out, name_size)) {
        case FIELD_OTHER:
            break;
        case FIELD_HOST:
            if (!is_plain_host(value, value_size)) {
                Py_DECREF(lowered);
                goto decline;
            }
            host_count++;
            break;
        case FIELD_CONNECTION:
            if (connection == CONNECTION_NONE && equals_lower(value, value_size, "close"))
                connection = CONNECTION_CLOSE;
            else if (connection == CONNECTION_NONE &&
                     equals_lower(value, value_size, "keep-alive"))
                connection = CONNECTION_KEEP_ALIVE;
            else {
                Py_DECREF(lowered);
                goto decline;
            }
            break;
        case FIELD_DECLINE:
            Py_DECREF(lowered);
            goto decline;
        }
        PyObject *field_value = PyBytes_FromStringAndSize(value, value_size);
        if (field_value == NULL) {
            Py_DECREF(lowered);
            goto error;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(lowered);
            Py_DECREF(field_value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, lowered);
        PyTuple_SET_ITEM(pair, 1, field_value);
        int failed = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (failed)
            goto error;
    }
    /* RFC 9112 section 3.2: exactly one Host on HTTP/1.1; llhttp's path says why not. */
    if (http11 ? host_count != 1 : host_count > 1)
        goto decline;
    int keep_alive =
        http11 ? connection != CONNECTION_CLOSE : connection == CONNECTION_KEEP_ALIVE;
    PyObject *target_bytes = PyBytes_FromStringAndSize(target, target_size);
    if (target_bytes == NULL)
        goto error;
    PyObject *end_offset = PyLong_FromSsize_t(p - buf);
    if (end_offset == NULL) {
        Py_DECREF(target_bytes);
        goto error;
    }
    PyObject *result = PyTuple_New(6);
    if (result == NULL) {
        Py_DECREF(target_bytes);
        Py_DECREF(end_offset);
        goto error;
    }
    PyObject *version = http11 ? version_11 : version_10;
    Py_INCREF(method);
    Py_INCREF(version);
    PyTuple_SET_ITEM(result, 0, method);
    PyTuple_SET_ITEM(result, 1, target_bytes);
    PyTuple_SET_ITEM(result, 2, version);
    PyTuple_SET_ITEM(result, 3, headers);
    PyTuple_SET_ITEM(result, 4, PyBool_FromLong(keep_alive));
    PyTuple_SET_ITEM(result, 5, end_offset);
    return result;

decline:
    Py_DECREF(headers);
    Py_RETURN_NONE;
error:
    Py_DECREF(headers);
    return NULL;
}

static PyMethodDef head_methods[] = {
    {"parse_head", (PyCFunction)(void (*)(void))parse_head, METH_FASTCALL,
     "Read one common request head at data[start], or return None to leave it to llhttp."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef head_module = {
    PyModuleDef_HEAD_INIT, "_head", "A strict reader for the common HTTP/1.1 request head.",
    -1, head_methods,
};

PyMODINIT_FUNC
PyInit__head(void)
{
    fill_classes();
    /* Interned, so the scope's method and version are the strings the
       Python side compares against (and the same objects request after request). */
    method_get = PyUnicode_InternFromString("GET");
    method_head = PyUnicode_InternFromString("HEAD");
    method_post = PyUnicode_InternFromString("POST");
    method_put = PyUnicode_InternFromString("PUT");
    method_delete = PyUnicode_InternFromString("DELETE");
    method_patch = PyUnicode_InternFromString("PATCH");
    method_options = PyUnicode_InternFromString("OPTIONS");
    version_11 = PyUnicode_InternFromString("1.1");
    version_10 = PyUnicode_InternFromString("1.0");
    if (!method_get || !method_head || !method_post || !method_put || !method_delete ||
        !method_patch || !method_options || !version_11 || !version_10)
        return NULL;
    return PyModule_Create(&head_module);
}
