/* Decoded fields as JSON text in C (optional: values/encode.py and values/decoder.py
 * are the reference, and write the same bytes without it).
 *
 * Writer(fallback)(fields) writes a fields dict as json.dumps(fields,
 * separators=(",", ":"), ensure_ascii=False) would, a float that is not finite
 * as null; anything it does not know exactly (a subclass, a key that is not a
 * str, a lone surrogate, nesting past MAX_DEPTH) it hands to fallback, the
 * Python writer, whole.
 *
 * Layout(big, fields, build).json(payload) writes the same text straight from
 * a payload's bytes, without a dict or a float object: what Writer would write
 * of the dict decoder.py builds from it (a test holds the two equal). The
 * Layout is what a decoded frame's Frame.values is: .fields(payload) calls
 * build, the Python that makes the dict.
 *
 * Floats are written as Python's repr writes them (the shortest text that reads
 * back to the same double, 1e-05 and 1e+16 beyond the fixed range), from the
 * shortest digits of the Schubfach algorithm (Raffaello Giulietti) as yyjson
 * writes it (schubfach/, MIT). CPython's own float repr runs David Gay's dtoa:
 * about 10,000 instructions for a sensor's f32 read as a double
 * (22.91079330444336); this takes about 260 with the spelling. Ryu, used before,
 * took about 390: an f32's double has 29 trailing zero bits, which sends Ryu
 * down its slower general path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "schubfach/schubfach.h"

/* a dict or list nested deeper than this goes to the fallback */
#define MAX_DEPTH 32
/* "-1.7976931348623157e+308" is 24 */
#define FLOAT_MAX 25
/* what write_double may write past its text's end (a fixed-size copy is one
 * move, a copy of n bytes a call): every buffer it writes into has this room */
#define FLOAT_ROOM 64

/* ---------------------------------------------------------------- floats */

/* the number of decimal digits of v, 1 <= v < 10**17 */
static inline int decimal_length(uint64_t v) {
    int n = 1;
    while (v >= 10) {
        v /= 10;
        ++n;
    }
    return n;
}

/* the n decimal digits of m into out, two at a time */
static inline void write_digits(char *out, uint64_t m, int n) {
    int i = n;
    /* the low eight digits in 32-bit steps: a 64-bit division is the slow part */
    if (m >> 32) {
        const uint64_t q = m / 100000000;
        const uint32_t low = (uint32_t)(m - 100000000 * q);
        m = q;
        const uint32_t c = low % 10000, d = low / 10000;
        memcpy(out + i - 2, digit_table + 2 * (c % 100), 2);
        memcpy(out + i - 4, digit_table + 2 * (c / 100), 2);
        memcpy(out + i - 6, digit_table + 2 * (d % 100), 2);
        memcpy(out + i - 8, digit_table + 2 * (d / 100), 2);
        i -= 8;
    }
    uint32_t m32 = (uint32_t)m;
    while (m32 >= 10000) {
        const uint32_t c = m32 % 10000;
        m32 /= 10000;
        memcpy(out + i - 2, digit_table + 2 * (c % 100), 2);
        memcpy(out + i - 4, digit_table + 2 * (c / 100), 2);
        i -= 4;
    }
    while (m32 >= 100) {
        const uint32_t c = m32 % 100;
        m32 /= 100;
        i -= 2;
        memcpy(out + i, digit_table + 2 * c, 2);
    }
    if (m32 >= 10) {
        i -= 2;
        memcpy(out + i, digit_table + 2 * m32, 2);
    } else {
        out[--i] = (char)('0' + m32);
    }
}

/* x as repr(x) writes it into out (FLOAT_ROOM bytes, of which it may scribble
 * on those past the text); 0 when x is not finite (the caller writes null). */
static Py_ssize_t write_double(char *out, double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint64_t sig_raw = bits & ((UINT64_C(1) << 52) - 1);
    const uint32_t exp_raw = (uint32_t)(bits >> 52) & 0x7ff;
    if (exp_raw == 0x7ff) return 0;
    char *p = out;
    if (bits >> 63) *p++ = '-';
    if ((bits << 1) == 0) {
        memcpy(p, "0.0", 3);
        return p + 3 - out;
    }
    /* x is 0.d1d2...dn * 10**(n + exp10) for the n digits written here */
    char digits[40]; /* 17 at most, the rest read by the fixed-size copies */
    uint64_t sig;
    int32_t exp10;
    int n;
    const uint64_t sig_bin = exp_raw ? sig_raw | (UINT64_C(1) << 52) : sig_raw;
    const int32_t exp_bin = exp_raw ? (int32_t)exp_raw - 1075 : -1074;
    if (exp_raw != 0 && !(exp_bin <= 0 && exp_bin >= -52 && (sig_bin & ((UINT64_C(1) << -exp_bin) - 1)) == 0)) {
        /* the common case: Schubfach's 16 or 17 digits, trailing zeros trimmed */
        f64_bin_to_dec(sig_raw, exp_raw, sig_bin, exp_bin, &sig, &exp10);
        n = (int)((char *)write_u64_len_16_to_17_trim(sig, (u8 *)digits) - digits);
        exp10 += 16 + (sig >= UINT64_C(10000000000000000)) - n;
    } else {
        if (exp_raw != 0) { /* an integer below 2**53: its own digits */
            sig = sig_bin >> -exp_bin;
            exp10 = 0;
        } else { /* subnormal: any number of digits */
            f64_bin_to_dec(sig_raw, exp_raw, sig_bin, exp_bin, &sig, &exp10);
        }
        n = decimal_length(sig);
        write_digits(digits, sig, n);
        while (digits[n - 1] == '0') { /* sig is not 0: a digit that is not 0 ends this */
            --n;
            ++exp10;
        }
    }
    /* the value is 0.d1d2...dn * 10**decpt; repr's rule (float_repr_style
     * "short", mode 'r'): exponent notation when decpt <= -4 or decpt > 16 */
    const int decpt = n + exp10;
    if (decpt <= -4 || decpt > 16) {
        *p++ = digits[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(n - 1));
            p += n - 1;
        }
        int e = decpt - 1;
        *p++ = 'e';
        *p++ = e < 0 ? '-' : '+';
        if (e < 0) e = -e;
        if (e >= 100) {
            *p++ = (char)('0' + e / 100);
            e %= 100;
        }
        *p++ = (char)('0' + e / 10);
        *p++ = (char)('0' + e % 10);
    } else if (decpt <= 0) {
        *p++ = '0';
        *p++ = '.';
        memset(p, '0', (size_t)-decpt);
        p += -decpt;
        memcpy(p, digits, (size_t)n);
        p += n;
    } else if (decpt >= n) {
        memcpy(p, digits, (size_t)n);
        p += n;
        memset(p, '0', (size_t)(decpt - n));
        p += decpt - n;
        memcpy(p, ".0", 2);
        p += 2;
    } else { /* the common case, 22.91079330444336: fixed-size copies, then the dot */
        memcpy(p, digits, 16);
        memcpy(p + decpt + 1, digits + decpt, 17);
        p[decpt] = '.';
        p += n + 1;
    }
    return p - out;
}

/* x as JSON: repr's text, or null where x is not finite (JSON has no NaN) */
static Py_ssize_t write_number(char *out, double x) {
    const Py_ssize_t n = write_double(out, x);
    if (n != 0) return n;
    memcpy(out, "null", 4);
    return 4;
}

/* decimal text of an integer into out (at least 21 bytes) */
static Py_ssize_t write_u64(char *out, uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static Py_ssize_t write_i64(char *out, int64_t v) {
    if (v >= 0) return write_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + write_u64(out + 1, (uint64_t)0 - (uint64_t)v);
}

/* float_repr(x): repr(x) for a finite x, None for a NaN or an infinity (test hook) */
static PyObject *float_repr(PyObject *module, PyObject *arg) {
    (void)module;
    const double x = PyFloat_AsDouble(arg);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    char buf[FLOAT_ROOM];
    const Py_ssize_t n = write_double(buf, x);
    if (n == 0) Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize(buf, n);
}

/* ---------------------------------------------------------------- a growing buffer */

typedef struct {
    char *p;
    Py_ssize_t n;
    Py_ssize_t cap;
    char stack[1024];
} Buf;

static void buf_init(Buf *b) {
    b->p = b->stack;
    b->n = 0;
    b->cap = (Py_ssize_t)sizeof b->stack;
}

static void buf_free(Buf *b) {
    if (b->p != b->stack) PyMem_Free(b->p);
}

/* room for `more` bytes after n; -1 with MemoryError set */
static int buf_grow(Buf *b, Py_ssize_t more);

static inline int buf_room(Buf *b, Py_ssize_t more) {
    if (b->n + more <= b->cap) return 0;
    return buf_grow(b, more);
}

static int buf_grow(Buf *b, Py_ssize_t more) {
    Py_ssize_t cap = b->cap;
    while (cap < b->n + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Malloc((size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(p, b->p, (size_t)b->n);
    buf_free(b);
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const char *s, Py_ssize_t n) {
    if (buf_room(b, n) < 0) return -1;
    memcpy(b->p + b->n, s, (size_t)n);
    b->n += n;
    return 0;
}

/* ---------------------------------------------------------------- strings */

static const char HEX[] = "0123456789abcdef";

/* the bytes json escapes: the C0 controls, '"' and '\\' */
static const unsigned char ESCAPE[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

/* UTF-8 text s as a JSON string, escaped as json's encode_basestring does
 * (ensure_ascii=False): '"', '\\' and the C0 controls; everything else as is */
static int put_escaped(Buf *b, const char *s, Py_ssize_t n) {
    /* most text needs no escape: one scan, one copy (short text byte by byte) */
    const unsigned char *u = (const unsigned char *)s;
    Py_ssize_t plain = 0;
    while (plain < n && !ESCAPE[u[plain]]) plain++;
    if (plain == n) {
        if (buf_room(b, n + 2) < 0) return -1;
        char *p = b->p + b->n;
        *p++ = '"';
        if (n <= 16) {
            for (Py_ssize_t i = 0; i < n; i++) p[i] = s[i];
        } else {
            memcpy(p, s, (size_t)n);
        }
        p[n] = '"';
        b->n += n + 2;
        return 0;
    }
    if (buf_room(b, n * 6 + 2) < 0) return -1;
    char *p = b->p + b->n;
    *p++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = (char)c;
            continue;
        }
        *p++ = '\\';
        switch (c) {
        case '"': *p++ = '"'; break;
        case '\\': *p++ = '\\'; break;
        case '\n': *p++ = 'n'; break;
        case '\r': *p++ = 'r'; break;
        case '\t': *p++ = 't'; break;
        case '\b': *p++ = 'b'; break;
        case '\f': *p++ = 'f'; break;
        default:
            *p++ = 'u';
            *p++ = '0';
            *p++ = '0';
            *p++ = HEX[c >> 4];
            *p++ = HEX[c & 15];
        }
    }
    *p++ = '"';
    b->n = p - b->p;
    return 0;
}

/* ---------------------------------------------------------------- Writer */

/* 1 written, 0 not plain (the fallback writes the whole), -1 an error set */
static int put_value(Buf *b, PyObject *v, int depth);

static int put_str(Buf *b, PyObject *s) {
    if (PyUnicode_IS_ASCII(s)) /* its characters are its UTF-8 */
        return put_escaped(b, (const char *)PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s)) < 0 ? -1 : 1;
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) { /* a lone surrogate: not UTF-8, the fallback decides */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
        PyErr_Clear();
        return 0;
    }
    return put_escaped(b, u, n) < 0 ? -1 : 1;
}

static int put_value(Buf *b, PyObject *v, int depth) {
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyFloat_Type) {
        if (buf_room(b, FLOAT_ROOM) < 0) return -1;
        b->n += write_number(b->p + b->n, PyFloat_AS_DOUBLE(v));
        return 1;
    }
    if (t == &PyLong_Type) {
        int overflow;
        const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) { /* past 64 bits: its decimal text, as json writes int.__repr__ */
            PyObject *text = PyLong_Type.tp_repr(v);
            if (text == NULL) { /* past sys.get_int_max_str_digits(): the fallback raises as json does */
                if (!PyErr_ExceptionMatches(PyExc_ValueError)) return -1;
                PyErr_Clear();
                return 0;
            }
            Py_ssize_t n;
            const char *digits = PyUnicode_AsUTF8AndSize(text, &n);
            const int r = digits == NULL ? -1 : buf_put(b, digits, n);
            Py_DECREF(text);
            return r < 0 ? -1 : 1;
        }
        if (x == -1 && PyErr_Occurred()) return -1;
        if (buf_room(b, 21) < 0) return -1;
        b->n += write_i64(b->p + b->n, (int64_t)x);
        return 1;
    }
    if (t == &PyUnicode_Type) return put_str(b, v);
    if (v == Py_True) return buf_put(b, "true", 4) < 0 ? -1 : 1;
    if (v == Py_False) return buf_put(b, "false", 5) < 0 ? -1 : 1;
    if (v == Py_None) return buf_put(b, "null", 4) < 0 ? -1 : 1;
    if (depth >= MAX_DEPTH) return 0;
    if (t == &PyList_Type || t == &PyTuple_Type) {
        PyObject *seq = v;
        if (buf_put(b, "[", 1) < 0) return -1;
        /* the size read each time and the item held: int.__repr__ of a huge int
         * runs Python code on 3.12+ (_pylong), so a GC finalizer may change the list */
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            if (i && buf_put(b, ",", 1) < 0) return -1;
            PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
            const int r = put_value(b, item, depth + 1);
            Py_DECREF(item);
            if (r <= 0) return r;
        }
        return buf_put(b, "]", 1) < 0 ? -1 : 1;
    }
    if (t == &PyDict_Type) {
        if (buf_put(b, "{", 1) < 0) return -1;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int first = 1;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (Py_TYPE(key) != &PyUnicode_Type) return 0; /* json would write its str() */
            if (!first && buf_put(b, ",", 1) < 0) return -1;
            first = 0;
            int r = put_str(b, key);
            if (r <= 0) return r;
            if (buf_put(b, ":", 1) < 0) return -1;
            Py_INCREF(value);
            r = put_value(b, value, depth + 1);
            Py_DECREF(value);
            if (r <= 0) return r;
        }
        return buf_put(b, "}", 1) < 0 ? -1 : 1;
    }
    return 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *fallback;
    vectorcallfunc vectorcall;
} Writer;

static PyObject *writer_write(Writer *self, PyObject *value) {
    Buf b;
    buf_init(&b);
    const int r = put_value(&b, value, 0);
    PyObject *out = NULL;
    if (r > 0) {
        out = PyBytes_FromStringAndSize(b.p, b.n);
    } else if (r == 0) {
        out = PyObject_CallOneArg(self->fallback, value);
    }
    buf_free(&b);
    return out;
}

static PyObject *writer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Writer takes one argument, the fields");
        return NULL;
    }
    return writer_write((Writer *)callable, args[0]);
}

static PyObject *writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *fallback;
    static char *kwlist[] = {"fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Writer", kwlist, &fallback)) return NULL;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return NULL;
    }
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->fallback = Py_NewRef(fallback);
    self->vectorcall = writer_vectorcall;
    return (PyObject *)self;
}

static int writer_traverse(Writer *self, visitproc visit, void *arg) {
    Py_VISIT(self->fallback);
    return 0;
}

static int writer_clear(Writer *self) {
    Py_CLEAR(self->fallback);
    return 0;
}

static void writer_dealloc(Writer *self) {
    PyObject_GC_UnTrack(self);
    writer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "firmware_host.values._json_c.Writer",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Writer(fallback)(fields) -> bytes: the fields as compact JSON",
    .tp_new = writer_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Writer, vectorcall),
    .tp_traverse = (traverseproc)writer_traverse,
    .tp_clear = (inquiry)writer_clear,
    .tp_dealloc = (destructor)writer_dealloc,
};

/* ---------------------------------------------------------------- Layout */

enum { K_U8, K_U16, K_U32, K_U64, K_I8, K_I16, K_I32, K_I64, K_F32, K_F64, K_BOOL, K_BYTES, K_COUNT };
static const char *const KIND_NAMES[K_COUNT] = {"u8",  "u16", "u32", "u64", "i8",   "i16",
                                                 "i32", "i64", "f32", "f64", "bool", "bytes"};
static const int KIND_SIZES[K_COUNT] = {1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 1, 0};

/* how a raw number becomes the field's value (decoder._convert) */
enum {
    CONV_NONE,  /* as unpacked */
    CONV_FLOAT, /* raw * scale + offset, all doubles */
    CONV_INT,   /* float(raw * iscale) + offset: an int scale, multiplied exactly first */
};

/* keys this long or shorter are copied as this many bytes (FLOAT_ROOM covers it) */
#define KEY_COPY 32

typedef struct {
    char *key; /* '"name":' (or ',"name":' after the first), as given */
    Py_ssize_t key_len;
    int kind;
    int count; /* elements: > 1 or is_array makes a JSON array */
    int is_array;
    Py_ssize_t size; /* bytes per element */
    int conv;
    double scale, offset;
    int64_t iscale;
} Field;

typedef struct {
    PyObject_HEAD
    PyObject *build; /* payload -> the fields dict, or None */
    int big;
    int nfields;
    Field *fields;
    Py_ssize_t size;    /* the payload's */
    Py_ssize_t max_out; /* the longest text json() can write */
} Layout;

/* n bytes (1, 2, 4 or 8) at p in the byte order asked for */
static inline uint64_t load(const unsigned char *p, Py_ssize_t n, int big) {
    uint64_t v = 0;
    if (big) {
        for (Py_ssize_t i = 0; i < n; i++) v = (v << 8) | p[i];
        return v;
    }
#if PY_LITTLE_ENDIAN
    switch (n) { /* a fixed-size copy: one load */
    case 1: return p[0];
    case 2: { uint16_t u; memcpy(&u, p, 2); return u; }
    case 4: { uint32_t u; memcpy(&u, p, 4); return u; }
    default: memcpy(&v, p, 8); return v;
    }
#else
    for (Py_ssize_t i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
#endif
}

static int64_t sign_extend(uint64_t v, Py_ssize_t n) {
    const int shift = (int)(64 - 8 * n);
    return (int64_t)(v << shift) >> shift;
}

/* one element of f at p into out (at least max_element(f) bytes) */
static Py_ssize_t write_element(const Field *f, const unsigned char *p, int big, char *out) {
    if (f->kind == K_BYTES) {
        out[0] = '"';
        for (Py_ssize_t i = 0; i < f->size; i++) {
            out[1 + 2 * i] = HEX[p[i] >> 4];
            out[2 + 2 * i] = HEX[p[i] & 15];
        }
        out[1 + 2 * f->size] = '"';
        return 2 + 2 * f->size;
    }
    if (f->kind == K_BOOL) { /* struct's '?': any byte but 0 is True */
        if (p[0]) {
            memcpy(out, "true", 4);
            return 4;
        }
        memcpy(out, "false", 5);
        return 5;
    }
    const uint64_t raw = load(p, f->size, big);
    double x;
    int64_t ix = 0;
    uint64_t ux = 0;
    int is_signed = 0;
    switch (f->kind) {
    case K_F32: {
        uint32_t u = (uint32_t)raw;
        float g;
        memcpy(&g, &u, sizeof g);
        x = (double)g;
        break;
    }
    case K_F64:
        memcpy(&x, &raw, sizeof x);
        break;
    case K_I8:
    case K_I16:
    case K_I32:
    case K_I64:
        is_signed = 1;
        ix = sign_extend(raw, f->size);
        x = (double)ix;
        break;
    default:
        ux = raw;
        x = (double)ux;
    }
    const int is_float = f->kind == K_F32 || f->kind == K_F64;
    if (f->conv == CONV_NONE && !is_float) return is_signed ? write_i64(out, ix) : write_u64(out, ux);
    if (f->conv == CONV_FLOAT) {
        /* two roundings, as Python's raw * scale + offset: the volatile store keeps a
         * compiler that contracts (gcc's default on arm64) from fusing them */
        volatile double product = x * f->scale;
        x = product + f->offset;
    } else if (f->conv == CONV_INT) {
        /* elements of 32 bits at most and |iscale| < 2**31: the product is exact in 64 bits */
        const int64_t exact = is_signed ? ix * f->iscale : (int64_t)ux * f->iscale;
        x = (double)exact + f->offset;
    }
    return write_number(out, x);
}

static Py_ssize_t max_element(const Field *f) {
    if (f->kind == K_BYTES) return 2 + 2 * f->size;
    return FLOAT_MAX; /* an integer is at most 20 characters, true 4, false 5 */
}

/* the JSON of the payload at p (self->size bytes) into out (room_of(self)
 * bytes); its length */
static Py_ssize_t layout_write(const Layout *self, const unsigned char *p, char *out) {
    char *q = out;
    *q++ = '{';
    for (int i = 0; i < self->nfields; i++) {
        const Field *f = &self->fields[i];
        if (f->key_len <= KEY_COPY) {
            memcpy(q, f->key, KEY_COPY); /* one move; the key is stored padded to KEY_COPY */
        } else {
            memcpy(q, f->key, (size_t)f->key_len);
        }
        q += f->key_len;
        if (f->is_array) *q++ = '[';
        for (int j = 0; j < f->count; j++) {
            if (j) *q++ = ',';
            q += write_element(f, p, self->big, q);
            p += f->size;
        }
        if (f->is_array) *q++ = ']';
    }
    *q++ = '}';
    return q - out;
}

/* FLOAT_ROOM past the longest text: write_double's and the keys' copies */
static Py_ssize_t room_of(const Layout *self) { return self->max_out + FLOAT_ROOM; }

/* the payload's bytes when it is of this layout's size; NULL with *other set
 * when it is of another size, NULL with an error when it has no bytes. The
 * caller releases view (which does nothing for exact bytes: obj is NULL) */
static const unsigned char *payload_of(const Layout *self, PyObject *payload, Py_buffer *view, int *other) {
    *other = 0;
    if (PyBytes_CheckExact(payload)) { /* the codecs' payloads: no buffer to take */
        view->obj = NULL;
        if (PyBytes_GET_SIZE(payload) != self->size) {
            *other = 1;
            return NULL;
        }
        return (const unsigned char *)PyBytes_AS_STRING(payload);
    }
    /* a plugin's bytearray or memoryview: read as struct.unpack reads it */
    if (PyObject_GetBuffer(payload, view, PyBUF_SIMPLE) < 0) return NULL;
    if (view->len != self->size) {
        PyBuffer_Release(view);
        *other = 1;
        return NULL;
    }
    return (const unsigned char *)view->buf;
}

/* a view payload_of took (none for exact bytes) */
static inline void release(Py_buffer *view) {
    if (view->obj != NULL) PyBuffer_Release(view);
}

/* the size of the stack buffer the text is written into when it fits */
#define STACK_TEXT 2048

/* the payload's JSON into *out: stack (STACK_TEXT bytes), or the heap where
 * the layout's text may be longer (the caller frees *out when it is not
 * stack). Its length; 0 for a payload of another size; -1 with an error set */
static Py_ssize_t layout_text(const Layout *self, PyObject *payload, char *stack, char **out) {
    int other;
    Py_buffer view;
    const unsigned char *p = payload_of(self, payload, &view, &other);
    if (p == NULL) return other ? 0 : -1;
    const Py_ssize_t room = room_of(self);
    *out = room <= STACK_TEXT ? stack : PyMem_Malloc((size_t)room);
    Py_ssize_t len = -1;
    if (*out == NULL) {
        PyErr_NoMemory();
    } else {
        len = layout_write(self, p, *out);
    }
    release(&view);
    return len;
}

static PyObject *layout_json(Layout *self, PyObject *payload) {
    char stack[STACK_TEXT];
    char *out = NULL;
    const Py_ssize_t len = layout_text(self, payload, stack, &out);
    if (len <= 0) {
        if (len == 0) Py_RETURN_NONE; /* not this layout's: no fields */
        return NULL;
    }
    PyObject *res = PyBytes_FromStringAndSize(out, len);
    if (out != stack) PyMem_Free(out);
    return res;
}

static const char MEMBER[] = ", \"fields\": ";

/* json_into(record, payload): record, one JSON object and a newline, with
 * "fields" added as its last member, in one allocation (the jsonl sink's
 * line, without a second formatting of it); record itself for a payload of
 * another size */
static PyObject *layout_json_into(Layout *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "json_into(record: bytes, payload: bytes)");
        return NULL;
    }
    PyObject *record = args[0];
    const Py_ssize_t n = PyBytes_GET_SIZE(record);
    const char *r = PyBytes_AS_STRING(record);
    if (n < 3 || r[n - 2] != '}' || r[n - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "the record must end with '}' and a newline");
        return NULL;
    }
    char stack[STACK_TEXT];
    char *out = NULL;
    const Py_ssize_t len = layout_text(self, args[1], stack, &out);
    if (len <= 0) return len == 0 ? Py_NewRef(record) : NULL;
    /* "{}\n": the fields are its only member, no comma before them */
    const int first = r[n - 3] == '{';
    const Py_ssize_t member = (Py_ssize_t)sizeof MEMBER - 1 - 2 * first;
    PyObject *res = PyBytes_FromStringAndSize(NULL, n - 2 + member + len + 2);
    if (res != NULL) {
        char *w = PyBytes_AS_STRING(res);
        memcpy(w, r, (size_t)(n - 2));
        w += n - 2;
        memcpy(w, MEMBER + 2 * first, (size_t)member);
        w += member;
        memcpy(w, out, (size_t)len);
        w += len;
        w[0] = '}';
        w[1] = '\n';
    }
    if (out != stack) PyMem_Free(out);
    return res;
}

static void layout_free_fields(Layout *self) {
    if (self->fields == NULL) return;
    for (int i = 0; i < self->nfields; i++) PyMem_Free(self->fields[i].key);
    PyMem_Free(self->fields);
    self->fields = NULL;
}

/* a scale or offset: None, a float or an int (exactly as a double where it is
 * an offset, as Python converts it to add it to a float) */
static int read_number(PyObject *v, int *given, int *is_int, double *d, int64_t *i) {
    *given = v != Py_None;
    *is_int = 0;
    if (!*given) return 0;
    if (PyFloat_CheckExact(v)) {
        *d = PyFloat_AS_DOUBLE(v);
        return 0;
    }
    if (PyLong_CheckExact(v)) {
        *is_int = 1;
        *d = PyLong_AsDouble(v);
        if (*d == -1.0 && PyErr_Occurred()) return -1;
        int overflow;
        const long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        *i = overflow ? INT64_MAX : (int64_t)x;
        return 0;
    }
    /* a bool, a float or int subclass (numpy.float64): Python's arithmetic, in Python */
    PyErr_SetString(PyExc_ValueError, "not written here: a scale or offset that is not an int or a float");
    return -1;
}

static PyObject *unsupported(const char *what) {
    PyErr_Format(PyExc_ValueError, "not written here: %s", what);
    return NULL;
}

/* Layout(big, fields, build): fields a sequence of (key, kind, count, is_array, size,
 * scale, offset), key the JSON of the field's name and a colon (b'"t":'). A
 * field it does not write (str; an int scale with an int offset, whose result
 * is an int; an int scale on 64-bit integers) is a ValueError: the caller then
 * writes the layout in Python. */
static PyObject *layout_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    int big;
    PyObject *specs;
    PyObject *build;
    static char *kwlist[] = {"big", "fields", "build", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "pOO:Layout", kwlist, &big, &specs, &build)) return NULL;
    if (!PyCallable_Check(build)) {
        PyErr_SetString(PyExc_TypeError, "build must be callable");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(specs, "fields must be a sequence");
    if (seq == NULL) return NULL;
    const Py_ssize_t nfields = PySequence_Fast_GET_SIZE(seq);
    if (nfields < 1 || nfields > 1024) {
        Py_DECREF(seq);
        return unsupported("a layout of 1 to 1024 fields");
    }
    Layout *self = (Layout *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    self->big = big;
    self->build = Py_NewRef(build);
    self->fields = PyMem_Calloc((size_t)nfields, sizeof(Field));
    if (self->fields == NULL) {
        Py_DECREF(seq);
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->nfields = (int)nfields;
    Py_ssize_t max_out = 2;
    for (Py_ssize_t i = 0; i < nfields; i++) {
        Field *f = &self->fields[i];
        const char *key, *kind;
        Py_ssize_t key_len, size;
        int count, is_array;
        PyObject *scale, *offset;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "y#sipnOO:field", &key, &key_len, &kind, &count,
                              &is_array, &size, &scale, &offset))
            goto fail;
        f->kind = -1;
        for (int k = 0; k < K_COUNT; k++) {
            if (strcmp(kind, KIND_NAMES[k]) == 0) f->kind = k;
        }
        if (f->kind < 0) {
            unsupported(kind);
            goto fail;
        }
        if (count < 1 || count > 65536 || (count > 1 && !is_array)) {
            unsupported("a count of 1 to 65536 (an array when more than 1)");
            goto fail;
        }
        if (f->kind == K_BYTES ? size < 1 || size > 65536 : size != KIND_SIZES[f->kind]) {
            unsupported("that size for the kind");
            goto fail;
        }
        f->count = count;
        f->is_array = is_array;
        f->size = size;
        /* a comma before every key but the first: written once here */
        f->key_len = key_len + (i > 0);
        f->key = PyMem_Calloc((size_t)(f->key_len < KEY_COPY ? KEY_COPY : f->key_len), 1);
        if (f->key == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        if (i > 0) f->key[0] = ',';
        memcpy(f->key + (i > 0), key, (size_t)key_len);
        int has_scale, scale_int, has_offset, offset_int;
        double scale_d = 1.0, offset_d = 0.0;
        int64_t scale_i = 0, offset_i = 0;
        if (read_number(scale, &has_scale, &scale_int, &scale_d, &scale_i) < 0) goto fail;
        if (read_number(offset, &has_offset, &offset_int, &offset_d, &offset_i) < 0) goto fail;
        f->conv = CONV_NONE;
        if (has_scale || has_offset) {
            if (f->kind == K_BOOL || f->kind == K_BYTES) {
                unsupported("scale and offset on a bool or bytes field");
                goto fail;
            }
            if (has_scale && scale_int && has_offset && offset_int) {
                unsupported("an int scale and an int offset (an int result)");
                goto fail;
            }
            f->scale = has_scale ? scale_d : 1.0;
            f->offset = has_offset ? offset_d : 0.0;
            f->conv = CONV_FLOAT;
            if (has_scale && scale_int && f->kind != K_F32 && f->kind != K_F64) {
                /* Python multiplies two ints exactly, then rounds once */
                if (KIND_SIZES[f->kind] > 4 || scale_i >= (INT64_C(1) << 31) || scale_i <= -(INT64_C(1) << 31)) {
                    unsupported("an int scale of 2**31 or more, or on a 64-bit integer");
                    goto fail;
                }
                f->conv = CONV_INT;
                f->iscale = scale_i;
            }
        }
        /* each term bounded before it is added (a wrapped max_out would overrun the
         * output buffer on a 32-bit build): a layout past 256 MiB stays in Python */
        const Py_ssize_t limit = (Py_ssize_t)1 << 28;
        if (self->size > limit || size > limit / count || max_out > limit || f->key_len > limit) {
            unsupported("a layout of more than 256 MiB");
            goto fail;
        }
        self->size += size * count;
        max_out += f->key_len + 2 + (max_element(f) + 1) * count;
    }
    Py_DECREF(seq);
    self->max_out = max_out;
    return (PyObject *)self;
fail:
    Py_DECREF(seq);
    Py_DECREF(self);
    return NULL;
}

static int layout_traverse(Layout *self, visitproc visit, void *arg) {
    Py_VISIT(self->build);
    return 0;
}

static int layout_clear(Layout *self) {
    Py_CLEAR(self->build);
    return 0;
}

static void layout_dealloc(Layout *self) {
    PyObject_GC_UnTrack(self);
    layout_clear(self);
    layout_free_fields(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *layout_fields(Layout *self, PyObject *payload) {
    if (self->build == NULL) {
        PyErr_SetString(PyExc_ValueError, "a cleared Layout");
        return NULL;
    }
    return PyObject_CallOneArg(self->build, payload);
}

static PyObject *layout_get_size(Layout *self, void *closure) {
    (void)closure;
    return PyLong_FromSsize_t(self->size);
}

static PyMethodDef layout_methods[] = {
    {"json_into", (PyCFunction)(void (*)(void))layout_json_into, METH_FASTCALL,
     "json_into(record, payload) -> bytes: record (a JSON object and a newline) with the fields added last"},
    {"fields", (PyCFunction)layout_fields, METH_O,
     "fields(payload) -> dict | None: the payload's fields (build's dict); None for another size"},
    {"json", (PyCFunction)layout_json, METH_O,
     "json(payload) -> bytes | None: the fields of a payload of this layout as compact JSON; None for another size"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef layout_getset[] = {
    {"size", (getter)layout_get_size, NULL, "the payload's size in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LayoutType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "firmware_host.values._json_c.Layout",
    .tp_basicsize = sizeof(Layout),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Layout(big, fields, build): a binary layout's Frame.values, writing its payloads as JSON",
    .tp_traverse = (traverseproc)layout_traverse,
    .tp_clear = (inquiry)layout_clear,
    .tp_new = layout_new,
    .tp_dealloc = (destructor)layout_dealloc,
    .tp_methods = layout_methods,
    .tp_getset = layout_getset,
};

/* ---------------------------------------------------------------- the decode loop */

static PyObject *str_payload, *str_type, *str_values, *str_fields;

/* Where a class keeps the three attributes the loop reads and sets, when they
 * are plain object slots (``__slots__``, as Frame's): read there directly, as
 * CPython's own LOAD_ATTR_SLOT does, instead of two lookups a frame through
 * the generic getattr (about 130 instructions each). A frame of another class,
 * or a slot not set, takes the generic way. */
typedef struct {
    PyTypeObject *type; /* a strong reference for the loop's length */
    Py_ssize_t payload, ftype, values, fields;
} Slots;

static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name, int writable) {
    PyObject *d = PyObject_GetAttr((PyObject *)type, name);
    if (d == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    /* a member of this class or a base: a descriptor copied from another class
     * (class C: payload = Frame.payload) would read C's objects at Frame's offsets */
    if (Py_IS_TYPE(d, &PyMemberDescr_Type) && PyType_IsSubtype(type, PyDescr_TYPE(d))) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(writable && (m->flags & READONLY))) offset = m->offset;
    }
    Py_DECREF(d);
    return offset;
}

static void slots_of(PyTypeObject *type, Slots *s) {
    s->type = NULL;
    s->payload = slot_offset(type, str_payload, 0);
    s->ftype = slot_offset(type, str_type, 0);
    s->values = slot_offset(type, str_values, 1);
    s->fields = slot_offset(type, str_fields, 1);
    if (s->payload >= 0 && s->ftype >= 0 && s->values >= 0 && s->fields >= 0)
        s->type = (PyTypeObject *)Py_NewRef(type);
}

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* a new reference to frame's attribute, from its slot when it has one set */
static inline PyObject *get(PyObject *frame, const Slots *s, Py_ssize_t offset, PyObject *name) {
    if (Py_TYPE(frame) == s->type) {
        PyObject *v = SLOT(frame, offset);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttr(frame, name);
}

/* the last type looked up and its entry: a read's frames are mostly of one type */
typedef struct {
    PyObject *type;  /* a strong reference, or NULL */
    PyObject *entry; /* a strong reference to its (size, values), or NULL: not described */
    Py_ssize_t size;
} Last;

static void last_clear(Last *last) {
    Py_CLEAR(last->type);
    Py_CLEAR(last->entry);
}

/* the length of a payload's bytes (its buffer's, as struct.unpack and
 * Layout.json read it); -1 with an error set when it has none */
static Py_ssize_t buffer_length(PyObject *payload) {
    if (PyBytes_CheckExact(payload)) return PyBytes_GET_SIZE(payload);
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0) return -1;
    const Py_ssize_t length = view.len;
    PyBuffer_Release(&view);
    return length;
}

/* one frame: 0 given its values or left alone, 1 of a described type and
 * another size, -1 an error set */
static int mark_one(PyObject *frame, PyObject *layouts, const Slots *slots, Last *last) {
    PyObject *payload = get(frame, slots, slots->payload, str_payload);
    if (payload == NULL) return -1;
    if (payload == Py_None) {
        Py_DECREF(payload);
        return 0;
    }
    PyObject *type = get(frame, slots, slots->ftype, str_type);
    if (type == NULL) {
        Py_DECREF(payload);
        return -1;
    }
    /* the same object as the last frame's type (ints below 256 are shared): its entry again */
    if (type != last->type) {
        last_clear(last);
        PyObject *entry = Py_XNewRef(PyDict_GetItemWithError(layouts, type));
        if (entry == NULL && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                Py_DECREF(type);
                Py_DECREF(payload);
                return -1;
            }
            PyErr_Clear(); /* an unhashable type: no layout describes it, as the Python loop finds */
        }
        if (entry != NULL) {
            if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
                PyErr_SetString(PyExc_TypeError, "layouts maps a type to (size, values)");
                last->size = -1;
            } else {
                last->size = PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0));
            }
            if (last->size < 0) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a negative size");
                Py_DECREF(entry);
                Py_DECREF(type);
                Py_DECREF(payload);
                return -1;
            }
        }
        last->type = Py_NewRef(type);
        last->entry = entry;
    }
    Py_DECREF(type);
    /* held for the frame: its getattr may be Python code that changes the dict */
    PyObject *entry = Py_XNewRef(last->entry);
    int r = 0;
    if (entry != NULL) {
        const Py_ssize_t size = last->size;
        const Py_ssize_t length = buffer_length(payload);
        PyObject *values = PyTuple_GET_ITEM(entry, 1);
        if (length < 0) {
            r = -1;
        } else if (length != size) {
            r = 1;
        } else if (Py_TYPE(frame) == slots->type) {
            /* the fields come from the layout now, as Python's frame.fields = ... did */
            Py_XSETREF(SLOT(frame, slots->values), Py_NewRef(values));
            Py_XSETREF(SLOT(frame, slots->fields), Py_NewRef(Py_None));
        } else if (PyObject_SetAttr(frame, str_values, values) < 0 ||
                   PyObject_SetAttr(frame, str_fields, Py_None) < 0) {
            r = -1;
        }
    }
    Py_XDECREF(entry);
    Py_DECREF(payload);
    return r;
}

/* mark(frames, layouts) -> int: decoder.py's generated loop for a schema of
 * binary layouts only, in C. layouts maps a frame type to (size, values);
 * a frame of a described type whose payload is that size gets values (its
 * Frame.values), one of another size is counted (the returned int); text
 * frames and undescribed types are left alone. */
static PyObject *mark(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "mark(frames, layouts: dict)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "frames must be a sequence");
    if (seq == NULL) return NULL;
    PyObject *layouts = args[1];
    long bad = 0;
    Slots slots = {NULL, 0, 0, 0, 0};
    if (PySequence_Fast_GET_SIZE(seq) > 0) slots_of(Py_TYPE(PySequence_Fast_GET_ITEM(seq, 0)), &slots);
    int failed = 0;
    Last last = {NULL, NULL, 0};
    /* the size read each time, and each frame and entry held: a frame of a
     * class of its own may run Python code in its getattr, which may change
     * the list or the dict */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *frame = Py_NewRef(PySequence_Fast_GET_ITEM(seq, i));
        const int r = mark_one(frame, layouts, &slots, &last);
        Py_DECREF(frame);
        if (r < 0) {
            failed = 1;
            break;
        }
        bad += r;
    }
    last_clear(&last);
    Py_XDECREF(slots.type);
    Py_DECREF(seq);
    return failed ? NULL : PyLong_FromLong(bad);
}

/* ---------------------------------------------------------------- module */

static PyMethodDef module_methods[] = {
    {"float_repr", float_repr, METH_O, "float_repr(x) -> str | None: repr(x) as written here; None if not finite"},
    {"mark", (PyCFunction)(void (*)(void))mark, METH_FASTCALL,
     "mark(frames, layouts) -> int: give each frame of a described type and size its values; count the others"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_json_c",
    .m_doc = "Decoded fields as JSON text (see _json_c.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__json_c(void) {
    if (PyType_Ready(&WriterType) < 0 || PyType_Ready(&LayoutType) < 0) return NULL;
    /* interned once, immortal for the process (as CPython's own identifiers) */
    if (str_payload == NULL) {
        str_payload = PyUnicode_InternFromString("payload");
        str_type = PyUnicode_InternFromString("type");
        str_values = PyUnicode_InternFromString("values");
        /* the slot under Frame.fields (the property): set as the fh1 codec sets it */
        str_fields = PyUnicode_InternFromString("_fields");
        if (str_payload == NULL || str_type == NULL || str_values == NULL || str_fields == NULL) return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Writer", (PyObject *)&WriterType) < 0 ||
        PyModule_AddObjectRef(m, "Layout", (PyObject *)&LayoutType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_DEPTH", MAX_DEPTH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
