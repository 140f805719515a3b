/* The NMEA fast path's plain cases in C (optional: values/nmea_fast.py is the reference).
 *
 * Parser().fields(text) gives the dict that NmeaFastPath.fields gives, or None
 * wherever it is not sure: a head (talker and type) not added yet, a number
 * that is not plain digits, a time or date that needs strptime, an odd shape.
 * The caller then asks the Python fast path, which decides exactly as it
 * always did (and, for what it does not decode, pynmeagps). So this holds no
 * rule of its own beyond "plain": tests hold its answers equal to the Python
 * path's on every sentence of the captures and on fuzzed ones.
 *
 * The Python path adds each head the first time it decodes one (nmea_fast.py,
 * NmeaFastPath._learn): add("GPGGA", "GP", "GGA", False, specs), specs[n] the
 * tuple of (key, op, hemisphere) of a sentence of n fields. The last entry
 * serves longer ones, except for a type with an open group (GSV, XDR: the
 * fourth argument True), whose longer sentences go to the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <string.h>

/* field ops, as nmea_fast's _OP_* number them */
enum { OP_TEXT, OP_INT, OP_FLOAT, OP_DEG, OP_DEG_S, OP_DEG_W, OP_TIME, OP_DATE };

/* more cells than this: the Python path (no receiver sends them) */
#define MAX_CELLS 48
/* the longest first field ("GPGGA", "GNGGAH") looked up */
#define MAX_HEAD 10
/* the longest number cell converted here (a longer one goes to the Python path) */
#define MAX_NUMBER 32

typedef struct {
    PyObject_HEAD
    PyObject *heads; /* dict */
    PyObject *key_msg;
    PyObject *key_talker;
} Parser;

static int is_digits(const char *p, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
    }
    return 1;
}

static PyObject *ascii_text(const char *p, Py_ssize_t n) {
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL) memcpy(PyUnicode_DATA(s), p, (size_t)n);
    return s;
}

/* Each converter: 1 and *out set (a new reference), 0 not plain (the Python
 * path decides), -1 an error set. */

static int conv_int(const char *p, Py_ssize_t n, PyObject **out) {
    if (n == 0) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    int neg = p[0] == '-';
    const char *d = p + neg;
    Py_ssize_t m = n - neg;
    if (m < 1 || m > 18 || !is_digits(d, m)) return 0;
    long long v = 0;
    for (Py_ssize_t i = 0; i < m; i++) v = v * 10 + (d[i] - '0');
    *out = PyLong_FromLongLong(neg ? -v : v);
    return *out == NULL ? -1 : 1;
}

/* 10**k for k <= 22: every one exact as a double */
static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Doubles here are IEEE binary64 with no wider intermediate (not x87), so one
 * division of two exact doubles is correctly rounded, and each operation is
 * rounded as Python rounds it. Elsewhere numbers go through CPython's own
 * strtod and dtoa, and positions to the Python path. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0 && DBL_MANT_DIG == 53
#define EXACT_DIVISION 1
#else
#define EXACT_DIVISION 0
#endif

/* -?digits[.digits*] as a double, exactly as float() reads it; 0 when not of
 * that form. Up to 15 significant digits and 22 decimals it is Clinger's fast
 * path, the one CPython's strtod itself takes for such a number: the digits as
 * an exact integer over an exact power of ten, one correctly rounded division.
 * Beyond that (and without EXACT_DIVISION) CPython's strtod reads it. */
static int plain_double(const char *p, Py_ssize_t n, double *value) {
    if (n < 1 || n > MAX_NUMBER) return 0;
    Py_ssize_t i = p[0] == '-';
    Py_ssize_t whole = 0, decimals = 0;
    long long digits = 0;
    int significant = 0;
    /* past 15 significant digits the value is read by strtod below: stop adding */
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++, whole++) {
        if (significant || p[i] != '0') {
            if (++significant <= 15) digits = digits * 10 + (p[i] - '0');
        }
    }
    if (whole == 0) return 0;
    if (i < n) {
        if (p[i] != '.') return 0;
        for (i++; i < n; i++, decimals++) {
            if (p[i] < '0' || p[i] > '9') return 0;
            if (significant || p[i] != '0') significant++;
            if (significant <= 15) digits = digits * 10 + (p[i] - '0');
        }
    }
    if (EXACT_DIVISION && significant <= 15 && decimals <= 22) {
        double v = (double)digits / POW10[decimals];
        *value = p[0] == '-' ? -v : v;
        return 1;
    }
    char buf[MAX_NUMBER + 1];
    memcpy(buf, p, (size_t)n);
    buf[n] = '\0';
    char *end = NULL;
    *value = PyOS_string_to_double(buf, &end, NULL);
    if (*value == -1.0 && PyErr_Occurred()) return -1;
    return end == buf + n ? 1 : 0;
}

static int conv_float(const char *p, Py_ssize_t n, PyObject **out) {
    if (n == 0) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    double v;
    int r = plain_double(p, n, &v);
    if (r != 1) return r;
    *out = PyFloat_FromDouble(v);
    return *out == NULL ? -1 : 1;
}

/* round(x, 10) as float.__round__ gives it, for 0 <= x < 2**19: the integer q
 * nearest x * 10**10, then the double nearest q / 10**10. float.__round__
 * gets q's digits from dtoa (mode 3: correctly rounded) and reads them back
 * with strtod (the nearest double); here x * 10**10 is done exactly in 128
 * bits, an exact tie goes to the even q as dtoa's does (round(1 / 2048, 10)),
 * and q < 2**53, so q / 1e10 is one correctly rounded division. Elsewhere (or
 * without EXACT_DIVISION) CPython's own dtoa and strtod. round10() below lets
 * a test hold this against round(). */
static int round10(double x, double *value) {
#if EXACT_DIVISION && defined(__SIZEOF_INT128__)
    if (x == 0) {
        *value = x;
        return 1;
    }
    if (x > 0 && x < 524288.0) {
        int exponent;
        double fraction = frexp(x, &exponent); /* x = fraction * 2**exponent, fraction in [0.5, 1) */
        unsigned long long m = (unsigned long long)ldexp(fraction, 53); /* exact: 53 bits */
        int shift = 53 - exponent - 10; /* x * 10**10 = m * 5**10 * 2**-shift */
        if (shift > 0 && shift < 120) {
            unsigned __int128 scaled = (unsigned __int128)m * 9765625u; /* 5**10 */
            unsigned __int128 q = scaled >> shift;
            unsigned __int128 rest = scaled - (q << shift);
            unsigned __int128 half = (unsigned __int128)1 << (shift - 1);
            if (rest > half || (rest == half && (q & 1))) q++;
            *value = (double)(unsigned long long)q / 1e10;
            return 1;
        }
    }
#endif
    char *s = PyOS_double_to_string(x, 'f', 10, 0, NULL);
    if (s == NULL) return -1;
    *value = PyOS_string_to_double(s, NULL, NULL);
    PyMem_Free(s);
    if (*value == -1.0 && PyErr_Occurred()) return -1;
    return 1;
}

/* (d)ddmm.mmm: nmea_fast._degrees, for plain digits only. Without
 * EXACT_DIVISION (x87: whole + minutes / 60 would be rounded once, in 80 bits,
 * where Python rounds each step) every position goes to the Python path. */
static int conv_degrees(const char *p, Py_ssize_t n, int negative, PyObject **out) {
    if (!EXACT_DIVISION) return 0;
    const char *dot = memchr(p, '.', (size_t)n);
    Py_ssize_t dp = dot == NULL ? -1 : dot - p;
    if (dp < 4) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    /* whole degrees: plain digits, so abs() changes nothing */
    if (dp - 2 > 15 || !is_digits(p, dp - 2)) return 0;
    if (!is_digits(p + dp - 2, 2)) return 0; /* minutes start with two digits, so no sign */
    double whole = 0;
    for (Py_ssize_t i = 0; i < dp - 2; i++) whole = whole * 10 + (p[i] - '0'); /* < 2**53: exact */
    double minutes;
    int r = plain_double(p + dp - 2, n - dp + 2, &minutes);
    if (r != 1) return r;
    double deg;
    if (round10(whole + minutes / 60, &deg) < 0) return -1;
    /* -abs(), as the Python path: so 0 in the south is -0.0 */
    *out = PyFloat_FromDouble(negative ? -fabs(deg) : fabs(deg));
    return *out == NULL ? -1 : 1;
}

static int two_below(const char *p, char hi, char lo) {
    /* the two digits p[0:2] compare below the text hi lo */
    return p[0] < hi || (p[0] == hi && p[1] < lo);
}

/* hhmmss[.f{1,6}]: nmea_fast._time without its strptime forms */
static int conv_time(const char *p, Py_ssize_t n, PyObject **out) {
    if (n == 0) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    if (!(n == 6 || (n >= 8 && n <= 13 && p[6] == '.'))) return 0;
    if (!is_digits(p, 6) || (n > 6 && !is_digits(p + 7, n - 7))) return 0;
    if (!two_below(p, '2', '4') || !two_below(p + 2, '6', '0') || !two_below(p + 4, '6', '0')) return 0;
    int zero = 1;
    for (Py_ssize_t i = 7; i < n; i++) {
        if (p[i] != '0') zero = 0;
    }
    char buf[16] = {p[0], p[1], ':', p[2], p[3], ':', p[4], p[5], '.', '0', '0', '0', '0', '0', '0', 0};
    if (!zero) memcpy(buf + 9, p + 7, (size_t)(n - 7));
    *out = ascii_text(buf, zero ? 8 : 15);
    return *out == NULL ? -1 : 1;
}

/* ddmmyy: nmea_fast._date without its strptime forms */
static int conv_date(const char *p, Py_ssize_t n, PyObject **out) {
    static const char last[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n == 0) {
        *out = Py_NewRef(Py_None);
        return 1;
    }
    if (n != 6 || !is_digits(p, 6)) return 0;
    int dd = (p[0] - '0') * 10 + (p[1] - '0');
    int mm = (p[2] - '0') * 10 + (p[3] - '0');
    int yy = (p[4] - '0') * 10 + (p[5] - '0');
    if (mm < 1 || mm > 12 || dd < 1 || dd > last[mm - 1]) return 0;
    int year = yy + (yy <= 68 ? 2000 : 1900);
    if (dd == 29 && mm == 2 && year % 4 != 0) return 0;
    char buf[10] = {(char)('0' + year / 1000), (char)('0' + year / 100 % 10), p[4], p[5], '-', p[2], p[3], '-', p[0], p[1]};
    *out = ascii_text(buf, 10);
    return *out == NULL ? -1 : 1;
}

static PyObject *Parser_fields(Parser *self, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "fields(text): text must be str");
        return NULL;
    }
    if (self->heads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Parser: cleared");
        return NULL;
    }
    /* a str subclass may answer len() or find() its own way: the Python path reads it */
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) Py_RETURN_NONE;
    const char *s = (const char *)PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text);
    Py_ssize_t star = len - 3;
    if (star < 6 || s[0] != '$') Py_RETURN_NONE;
    const char *first_star = memchr(s, '*', (size_t)len);
    if (first_star != s + star) Py_RETURN_NONE;

    /* the cells between "$" and "*" */
    Py_ssize_t starts[MAX_CELLS], ends[MAX_CELLS];
    Py_ssize_t cells = 0, at = 1;
    for (Py_ssize_t i = 1; i <= star; i++) {
        if (i == star || s[i] == ',') {
            if (cells == MAX_CELLS) Py_RETURN_NONE;
            starts[cells] = at;
            ends[cells] = i;
            cells++;
            at = i + 1;
        }
    }
    Py_ssize_t head_len = ends[0] - starts[0];
    if (head_len < 3 || head_len > MAX_HEAD) Py_RETURN_NONE;
    PyObject *head = ascii_text(s + 1, head_len);
    if (head == NULL) return NULL;
    PyObject *known = PyDict_GetItemWithError(self->heads, head); /* borrowed; add() checked its shape */
    Py_DECREF(head);
    if (known == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE; /* a head not learnt yet (the Python path learns it), or not decoded here */
    }
    PyObject *talker = PyTuple_GET_ITEM(known, 0);
    PyObject *msg = PyTuple_GET_ITEM(known, 1);
    int open_group = PyTuple_GET_ITEM(known, 2) == Py_True;
    PyObject *specs = PyTuple_GET_ITEM(known, 3);
    Py_ssize_t payload = cells - 1;
    if (payload >= PyTuple_GET_SIZE(specs)) {
        if (open_group) Py_RETURN_NONE;
        payload = PyTuple_GET_SIZE(specs) - 1;
    }
    PyObject *spec = PyTuple_GET_ITEM(specs, payload);
    Py_ssize_t fields = PyTuple_GET_SIZE(spec);

#if PY_VERSION_HEX < 0x030E0000
    PyObject *out = _PyDict_NewPresized(fields + 2); /* one allocation: CPython's own, not public API */
#else
    PyObject *out = PyDict_New();
#endif
    if (out == NULL) return NULL;
    if (PyDict_SetItem(out, self->key_msg, msg) < 0 || PyDict_SetItem(out, self->key_talker, talker) < 0) goto error;
    for (Py_ssize_t i = 0; i < fields; i++) {
        PyObject *item = PyTuple_GET_ITEM(spec, i);
        PyObject *key = PyTuple_GET_ITEM(item, 0);
        long op = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
        const char *p = s + starts[i + 1];
        Py_ssize_t n = ends[i + 1] - starts[i + 1];
        PyObject *value = NULL;
        int r;
        switch (op) {
        case OP_TEXT:
            if (n == 0) {
                value = Py_NewRef(Py_None);
                r = 1;
            } else {
                value = ascii_text(p, n);
                r = value == NULL ? -1 : 1;
            }
            break;
        case OP_INT: r = conv_int(p, n, &value); break;
        case OP_FLOAT: r = conv_float(p, n, &value); break;
        case OP_DEG: r = conv_degrees(p, n, 0, &value); break;
        case OP_DEG_S:
        case OP_DEG_W: {
            /* signed by a later field of the spec (its hemisphere): add() checked it is one */
            Py_ssize_t j = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 2)) + 1;
            const char *h = s + starts[j];
            Py_ssize_t hn = ends[j] - starts[j];
            int negative = hn == 1 && h[0] == (op == OP_DEG_S ? 'S' : 'W');
            r = conv_degrees(p, n, negative, &value);
            break;
        }
        case OP_TIME: r = conv_time(p, n, &value); break;
        case OP_DATE: r = conv_date(p, n, &value); break;
        default:
            PyErr_Format(PyExc_ValueError, "unknown field op %ld", op);
            r = -1;
        }
        if (r < 0) goto error;
        if (r == 0) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        int set = PyDict_SetItem(out, key, value);
        Py_DECREF(value);
        if (set < 0) goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* specs[n]: a tuple of at most n fields (key, op, hemisphere), hemisphere the
 * index of a later field for OP_DEG_S and OP_DEG_W, else -1 */
static int check_specs(PyObject *specs) {
    if (!PyTuple_Check(specs) || PyTuple_GET_SIZE(specs) < 1 || PyTuple_GET_SIZE(specs) >= MAX_CELLS) {
        PyErr_SetString(PyExc_TypeError, "specs: a tuple of 1 to 47 specs, one per payload length");
        return -1;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(specs); j++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, j);
        if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) > j) {
            PyErr_SetString(PyExc_TypeError, "specs[n]: a tuple of at most n fields");
            return -1;
        }
        Py_ssize_t fields = PyTuple_GET_SIZE(spec);
        for (Py_ssize_t f = 0; f < fields; f++) {
            PyObject *item = PyTuple_GET_ITEM(spec, f);
            if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 || !PyUnicode_Check(PyTuple_GET_ITEM(item, 0)) ||
                !PyLong_Check(PyTuple_GET_ITEM(item, 1)) || !PyLong_Check(PyTuple_GET_ITEM(item, 2))) {
                PyErr_SetString(PyExc_TypeError, "a field: (key, op, hemisphere)");
                return -1;
            }
            long op = PyLong_AsLong(PyTuple_GET_ITEM(item, 1));
            Py_ssize_t hemisphere = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 2));
            if (PyErr_Occurred()) return -1;
            int signed_op = op == OP_DEG_S || op == OP_DEG_W;
            if (op < OP_TEXT || op > OP_DATE || (signed_op && (hemisphere <= f || hemisphere >= fields)) ||
                (!signed_op && hemisphere != -1)) {
                PyErr_SetString(PyExc_ValueError, "a field's op is unknown, or its hemisphere is not a later field");
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *Parser_add(Parser *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "add(head, talker, msg, open_group, specs)");
        return NULL;
    }
    PyObject *head = args[0], *talker = args[1], *msg = args[2], *open_group = args[3], *specs = args[4];
    if (!PyUnicode_CheckExact(head) || !PyUnicode_Check(talker) || !PyUnicode_Check(msg) || !PyBool_Check(open_group)) {
        PyErr_SetString(PyExc_TypeError, "add(head: str, talker: str, msg: str, open_group: bool, specs)");
        return NULL;
    }
    if (check_specs(specs) < 0) return NULL;
    if (self->heads == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Parser: cleared");
        return NULL;
    }
    PyObject *entry = PyTuple_Pack(4, talker, msg, open_group, specs);
    if (entry == NULL) return NULL;
    int r = PyDict_SetItem(self->heads, head, entry);
    Py_DECREF(entry);
    if (r < 0) return NULL;
    Py_RETURN_NONE;
}

/* everything is made here, so no call can meet a Parser without its dict */
static PyObject *Parser_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Parser() takes no arguments");
        return NULL;
    }
    Parser *self = (Parser *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->heads = PyDict_New();
    self->key_msg = PyUnicode_InternFromString("msg");
    self->key_talker = PyUnicode_InternFromString("talker");
    if (self->heads == NULL || self->key_msg == NULL || self->key_talker == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int Parser_traverse(Parser *self, visitproc visit, void *arg) {
    Py_VISIT(self->heads);
    return 0;
}

static int Parser_clear(Parser *self) {
    Py_CLEAR(self->heads);
    Py_CLEAR(self->key_msg);
    Py_CLEAR(self->key_talker);
    return 0;
}

static void Parser_dealloc(Parser *self) {
    PyObject_GC_UnTrack(self);
    Parser_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Parser_methods[] = {
    {"fields", (PyCFunction)Parser_fields, METH_O,
     PyDoc_STR("fields(text): the fast path's fields of a plain sentence, or None (ask the Python path)")},
    {"add", (PyCFunction)(void (*)(void))Parser_add, METH_FASTCALL,
     PyDoc_STR("add(head, talker, msg, open_group, specs): decode sentences whose first field is head")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "firmware_host.values._nmea_c.Parser",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = PyDoc_STR("Parser(): the NMEA fast path's plain cases, for the heads add() gives it"),
    .tp_new = Parser_new,
    .tp_methods = Parser_methods,
    .tp_traverse = (traverseproc)Parser_traverse,
    .tp_clear = (inquiry)Parser_clear,
    .tp_dealloc = (destructor)Parser_dealloc,
};

static PyObject *module_round10(PyObject *module, PyObject *arg) {
    double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    if (!(x >= 0) || isinf(x)) {
        PyErr_SetString(PyExc_ValueError, "round10: x must be finite and >= 0");
        return NULL;
    }
    double r;
    if (round10(x, &r) < 0) return NULL;
    return PyFloat_FromDouble(r);
}

static PyMethodDef module_methods[] = {
    {"round10", module_round10, METH_O, PyDoc_STR("round10(x): round(x, 10) as the positions do it (for the tests)")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_methods = module_methods,
    .m_name = "firmware_host.values._nmea_c",
    .m_doc = "The NMEA fast path's plain cases in C (see values/nmea_fast.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__nmea_c(void) {
    if (PyType_Ready(&ParserType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* the most payload fields add() takes a spec for (the head is a cell too) */
    if (PyModule_AddObjectRef(m, "Parser", (PyObject *)&ParserType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_PAYLOAD", MAX_CELLS - 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
