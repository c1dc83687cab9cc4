/*
 * The compiled twins of nasdaq_protocols.soup.framing.python_walk_packets, python_scan_packets
 * and python_frame_sequenced.
 *
 * What belongs here: the walk over the whole packets of one read (walk_packets), the step over
 * a run of Sequenced Data (scan_packets) and the framing of a batch of payloads as Sequenced Data
 * (frame_sequenced), nothing else. walk_packets reads the 2-byte length
 * fields, builds Sequenced Data inline and hands every other packet type to the Python
 * decode_payload. The contracts are the Python functions' docstrings, followed to the letter
 * (tests/test_walker.py and fuzz/fuzz_walker.py compare the twins on the same bytes). Every rule
 * about what a packet may hold stays in Python: if a rule must change, change it there, not here.
 *
 * framing._choose_walker() imports this module and calls setup() once with the Python objects
 * walk_packets needs; walk_packets() refuses to run before that. SOUPBINTCP_NO_EXTENSIONS=1 makes
 * framing use the pure-Python functions instead (and makes setup.py skip building this file).
 *
 * Speed (the 256 KiB read of 32-byte Sequenced Data of `python -m bench --scenario walker`,
 * CPython 3.11): about 35 ns per message against about 340 for python_walk_packets. It was 100,
 * half of it the cyclic garbage collector, set off by the thousands of new objects a read makes;
 * the messages are now untracked as they are built (they hold only a bytes object and an int,
 * so they cannot be part of a cycle), and the collector never runs on a feed.
 *   - Sequenced Data is allocated with the type's tp_alloc (what object.__new__ does, without the
 *     argument checks) and its two slots are filled by writing at their offsets, which setup()
 *     reads from the class's member descriptors and checks. Calling the descriptors'
 *     tp_descr_set instead cost 10 ns more per message.
 *   - The sequence number is a C long long while it fits (always, in practice), else Python ints.
 *   - Freeing them is the other half of a batch read's cost: setup() gives the class a dealloc of
 *     its own (sequenced_dealloc), which clears its slots and weak references and nothing else,
 *     when its instances hold nothing more (install_dealloc checks). CPython's generic one for
 *     classes defined in Python took about a sixth of a batch read; with this one the batch read
 *     went from about 1.8 to 2.1-2.4 times the raw client (python -m bench --scenario batch).
 *   - The list being built is untracked by the collector until it is returned: the collections
 *     the new messages set off walked it whole each time.
 * scan_packets: about 5 ns per packet against about 320 for python_scan_packets.
 * frame_sequenced: about 8 ns per packet against about 130 for python_frame_sequenced.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define SLOT_OBJECT_EX T_OBJECT_EX
#define SLOT_READONLY READONLY
#else
#define SLOT_OBJECT_EX Py_T_OBJECT_EX
#define SLOT_READONLY Py_READONLY
#endif

#define SEQUENCED_DATA 'S'

typedef struct {
    PyTypeObject *sequenced_type; /* core.SequencedData */
    PyObject *decode_payload;     /* core.decode_payload(type_byte, payload) -> SoupMessage */
    PyObject *invalid_message;    /* core.InvalidSoupMessage */
    PyObject *length_error;       /* framing.length_error(data, position, length, max_size) */
    Py_ssize_t data_offset;       /* where SequencedData keeps its `data` slot */
    Py_ssize_t sequence_offset;   /* ... and its `sequence` slot */
} walker_state;

static inline walker_state *
get_state(PyObject *module)
{
    return (walker_state *)PyModule_GetState(module);
}

/* A walk works on a copy of the state that holds its own references: Python code that runs during
   a walk (decode_payload, a finalizer run by the garbage collector) may call setup() again. */
static void
hold_state(walker_state *copy, const walker_state *state)
{
    *copy = *state;
    Py_INCREF(copy->sequenced_type);
    Py_INCREF(copy->decode_payload);
    Py_INCREF(copy->invalid_message);
    Py_INCREF(copy->length_error);
}

static void
release_state(walker_state *copy)
{
    Py_DECREF(copy->sequenced_type);
    Py_DECREF(copy->decode_payload);
    Py_DECREF(copy->invalid_message);
    Py_DECREF(copy->length_error);
}

/* The offset of the writable object slot `name` of `type`, or -1 with an exception set. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descriptor = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descriptor == NULL || !PyObject_TypeCheck(descriptor, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
    if (member->type != SLOT_OBJECT_EX || (member->flags & SLOT_READONLY) ||
        PyDescr_TYPE(descriptor) != type || member->offset < (Py_ssize_t)sizeof(PyObject) ||
        member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot of its own", type->tp_name,
                     name);
        return -1;
    }
    return member->offset;
}

/* Freeing a Sequenced Data: what CPython's generic dealloc of a class defined in Python
   (subtype_dealloc) does for this class, without its general work (finalizers, a __dict__, the
   walk up the bases to find each one's slots): about a sixth of a batch read's time went there.
   setup() installs it only on a class whose instances hold nothing but object slots and perhaps a
   weak reference list (checked there), so clearing those is all there is to do. An instance of a
   subclass comes here from the subclass's own subtype_dealloc (which has run its finalizer and
   cleared its own slots and __dict__): `base` is then the class this was installed on. */
static void
sequenced_dealloc(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self), *base = type;
    while (base->tp_dealloc != sequenced_dealloc) {
        base = base->tp_base;
    }
    if (PyType_IS_GC(type)) {
        PyObject_GC_UnTrack(self);
    }
    const Py_ssize_t weaklist = base->tp_weaklistoffset;
    if (weaklist != 0 && *(PyObject **)((char *)self + weaklist) != NULL) {
        PyObject_ClearWeakRefs(self);
    }
    for (Py_ssize_t offset = sizeof(PyObject); offset < base->tp_basicsize; offset += sizeof(PyObject *)) {
        if (offset != weaklist) {
            Py_CLEAR(*(PyObject **)((char *)self + offset));
        }
    }
    type->tp_free(self);
    Py_DECREF(type); /* an instance of a class defined in Python holds a reference to it */
}

/* Install sequenced_dealloc on `type` when it is safe: a class defined in Python whose bases up to
   object are too and add nothing to the layout, with no finalizer and no __dict__, whose instances
   are object slots (and perhaps a weak reference list) and nothing else. Otherwise leave it as it
   is: freeing is then CPython's generic way, only slower. */
static void
install_dealloc(PyTypeObject *type)
{
    if (type->tp_dealloc == sequenced_dealloc) {
        return;
    }
#ifdef Py_GIL_DISABLED
    return;
#endif
#ifdef Py_TPFLAGS_MANAGED_DICT
    if (type->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        return;
    }
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
    if (type->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF) {
        return;
    }
#endif
    if (type->tp_finalize != NULL || type->tp_del != NULL || type->tp_dictoffset != 0 ||
        type->tp_itemsize != 0 || type->tp_weaklistoffset < 0 || type->tp_members == NULL ||
        type->tp_free == NULL) {
        return;
    }
    for (PyTypeObject *base = type; base != &PyBaseObject_Type; base = base->tp_base) {
        if (base == NULL || !(base->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
            base->tp_dealloc != type->tp_dealloc ||
            (base != type && base->tp_basicsize != (Py_ssize_t)sizeof(PyObject))) {
            return;
        }
    }
    /* Every pointer after the header is an object slot of this class or the weak reference list. */
    Py_ssize_t slots = 0;
    for (PyMemberDef *member = type->tp_members; member->name != NULL; member++) {
        if (member->type != SLOT_OBJECT_EX || member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset == type->tp_weaklistoffset || member->offset % sizeof(PyObject *) != 0) {
            return;
        }
        slots++;
    }
    const Py_ssize_t expected = (Py_ssize_t)sizeof(PyObject) +
                                (slots + (type->tp_weaklistoffset != 0)) * (Py_ssize_t)sizeof(PyObject *);
    if (type->tp_basicsize != expected || type->tp_weaklistoffset >= type->tp_basicsize) {
        return;
    }
    type->tp_dealloc = sequenced_dealloc;
}

PyDoc_STRVAR(setup_doc,
             "setup(sequenced_data, decode_payload, invalid_message, length_error)\n--\n\n"
             "Give the walker the Python objects it uses (framing._choose_walker() does, once).\n\n"
             "Raises TypeError when SequencedData is not the slotted class the walker can fill in\n"
             "(then the pure-Python walker must be used).");

static PyObject *
walker_setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "setup() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *sequenced = args[0], *decode_payload = args[1], *invalid = args[2],
             *length_error = args[3];
    if (!PyType_Check(sequenced)) {
        PyErr_SetString(PyExc_TypeError, "setup(): sequenced_data must be a class");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)sequenced;
    /* The walker builds instances as object.__new__ does and sets their slots directly: refuse a
       class whose instances need more than that (an abstract class, a __setattr__ hook), and any
       class not defined in Python (a static type's tp_dict may be NULL from 3.12 on). */
    if (!(type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_dict == NULL || type->tp_alloc == NULL ||
        (type->tp_flags & Py_TPFLAGS_IS_ABSTRACT) || type->tp_setattro != PyObject_GenericSetAttr) {
        PyErr_Format(PyExc_TypeError, "setup(): %s cannot be built without its __init__", type->tp_name);
        return NULL;
    }
    Py_ssize_t data_offset = slot_offset(type, "data");
    if (data_offset < 0) {
        return NULL;
    }
    Py_ssize_t sequence_offset = slot_offset(type, "sequence");
    if (sequence_offset < 0) {
        return NULL;
    }
    if (!PyCallable_Check(decode_payload) || !PyCallable_Check(length_error)) {
        PyErr_SetString(PyExc_TypeError, "setup(): decode_payload and length_error must be callable");
        return NULL;
    }
    if (!PyExceptionClass_Check(invalid)) {
        PyErr_SetString(PyExc_TypeError, "setup(): invalid_message must be an exception class");
        return NULL;
    }
    walker_state *state = get_state(module);
    Py_INCREF(type);
    Py_XSETREF(state->sequenced_type, type);
    Py_XSETREF(state->decode_payload, Py_NewRef(decode_payload));
    Py_XSETREF(state->invalid_message, Py_NewRef(invalid));
    Py_XSETREF(state->length_error, Py_NewRef(length_error));
    state->data_offset = data_offset;
    state->sequence_offset = sequence_offset;
    install_dealloc(type);
    Py_RETURN_NONE;
}

/* The exception being raised, with its traceback attached (as `except ... as exc` sees it). */
static PyObject *
take_raised_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

/* The message of a packet that is not Sequenced Data, through decode_payload(type, payload).
   Returns 1 with *message set, 0 with *error set (an InvalidSoupMessage), -1 on another error. */
static int
decode_other(walker_state *state, const unsigned char *packet, Py_ssize_t length, PyObject **message,
             PyObject **error)
{
    PyObject *arguments[2];
    arguments[0] = PyLong_FromLong(packet[2]);
    if (arguments[0] == NULL) {
        return -1;
    }
    arguments[1] = PyBytes_FromStringAndSize((const char *)packet + 3, length - 1);
    if (arguments[1] == NULL) {
        Py_DECREF(arguments[0]);
        return -1;
    }
    *message = PyObject_Vectorcall(state->decode_payload, arguments, 2, NULL);
    Py_DECREF(arguments[0]);
    Py_DECREF(arguments[1]);
    if (*message != NULL) {
        return 1;
    }
    if (!PyErr_ExceptionMatches(state->invalid_message)) {
        return -1;
    }
    *error = take_raised_exception();
    return 0;
}

/* length_error(data, position, length, max_size): the error of a length of 0 or above max_size. */
static PyObject *
call_length_error(walker_state *state, PyObject *data, Py_ssize_t position, long length,
                  PyObject *max_size)
{
    PyObject *arguments[4] = {data, PyLong_FromSsize_t(position), PyLong_FromLong(length), max_size};
    PyObject *error = NULL;
    if (arguments[1] != NULL && arguments[2] != NULL) {
        error = PyObject_Vectorcall(state->length_error, arguments, 4, NULL);
    }
    Py_XDECREF(arguments[1]);
    Py_XDECREF(arguments[2]);
    return error;
}

/* The next sequence number as an int: a C long long while it fits (`fast`), else Python ints. */
typedef struct {
    int fast;
    long long value;
    PyObject *number; /* the last number made, new reference; the caller's `sequence` at first */
} sequence_counter;

static PyObject *
next_sequence(sequence_counter *counter)
{
    PyObject *number;
    if (counter->fast) {
        number = PyLong_FromLongLong(++counter->value);
    }
    else {
        PyObject *one = PyLong_FromLong(1);
        if (one == NULL) {
            return NULL;
        }
        number = PyNumber_Add(counter->number, one);
        Py_DECREF(one);
    }
    if (number == NULL) {
        return NULL;
    }
    Py_SETREF(counter->number, Py_NewRef(number));
    return number;
}

PyDoc_STRVAR(walk_packets_doc,
             "walk_packets(data, position, limit, sequence, max_size)\n--\n\n"
             "Decode the whole packets of data from position: the compiled twin of\n"
             "framing.python_walk_packets, whose docstring is the contract.\n\n"
             "Returns (messages, position, sequence, error). data may be any contiguous buffer;\n"
             "payloads are bytes. A negative position raises ValueError.");

static PyObject *
walker_walk_packets(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "walk_packets() takes 5 arguments (%zd given)", nargs);
        return NULL;
    }
    if (get_state(module)->sequenced_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "walk_packets() called before setup()");
        return NULL;
    }
    PyObject *data = args[0], *position_object = args[1], *sequence_object = args[3],
             *max_size_object = args[4];
    /* Huge values are clipped: a position past the end and a limit or maximum above anything a
       read holds act as they do in Python. */
    Py_ssize_t position = PyNumber_AsSsize_t(position_object, NULL);
    if (position == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (position < 0) {
        PyErr_SetString(PyExc_ValueError, "walk_packets(): position must not be negative");
        return NULL;
    }
    const Py_ssize_t start = position;
    Py_ssize_t limit = PyNumber_AsSsize_t(args[2], NULL);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t max_size = PyNumber_AsSsize_t(max_size_object, NULL);
    if (max_size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyLong_Check(sequence_object)) {
        PyErr_Format(PyExc_TypeError, "walk_packets(): sequence must be an int, not %.100s",
                     Py_TYPE(sequence_object)->tp_name);
        return NULL;
    }

    Py_buffer view;
    const unsigned char *buffer;
    Py_ssize_t end;
    int has_view = 0;
    walker_state held, *state = &held;
    hold_state(state, get_state(module));
    if (PyBytes_CheckExact(data)) {
        buffer = (const unsigned char *)PyBytes_AS_STRING(data);
        end = PyBytes_GET_SIZE(data);
    }
    else {
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            release_state(state);
            return NULL;
        }
        has_view = 1;
        buffer = (const unsigned char *)view.buf;
        end = view.len;
    }

    sequence_counter counter = {0, 0, Py_NewRef(sequence_object)};
    int overflow;
    counter.value = PyLong_AsLongLongAndOverflow(sequence_object, &overflow);
    if (counter.value == -1 && PyErr_Occurred()) {
        goto failed_early;
    }
    /* Fewer than (end - position) / 3 Sequenced Data follow: the count cannot overflow. */
    counter.fast = overflow == 0 && counter.value <= LLONG_MAX - (long long)(end / 3 + 1);

    PyObject *messages = PyList_New(0);
    if (messages == NULL) {
        goto failed_early;
    }
    /* Out of the collector's sight while it grows (tracked again at the end): the collections its
       allocations set off would otherwise walk the whole list each time, quadratic in its length. */
    PyObject_GC_UnTrack(messages);
    PyTypeObject *sequenced_type = state->sequenced_type;
    const Py_ssize_t data_offset = state->data_offset, sequence_offset = state->sequence_offset;
    const int untrack = PyType_IS_GC(sequenced_type);
    PyObject *error = NULL;
    Py_ssize_t count = 0;
    while (count < limit) {
        if (position > end - 2) {
            break; /* fewer than 2 bytes left: the length field is incomplete */
        }
        const unsigned char *packet = buffer + position;
        const long length = ((long)packet[0] << 8) | packet[1];
        if (length == 0 || length > max_size) {
            error = call_length_error(state, data, position, length, max_size_object);
            if (error == NULL) {
                goto failed;
            }
            break;
        }
        const Py_ssize_t stop = position + 2 + length;
        if (stop > end) {
            break; /* incomplete packet */
        }
        if (packet[2] == SEQUENCED_DATA) {
            PyObject *message = sequenced_type->tp_alloc(sequenced_type, 0);
            if (message == NULL) {
                goto failed;
            }
            PyObject *payload = PyBytes_FromStringAndSize((const char *)packet + 3, length - 1);
            PyObject *number = payload == NULL ? NULL : next_sequence(&counter);
            if (number == NULL) {
                Py_XDECREF(payload);
                Py_DECREF(message);
                goto failed;
            }
            /* A fresh instance: both slots are NULL, so nothing to release (see setup()). */
            *(PyObject **)((char *)message + data_offset) = payload;
            *(PyObject **)((char *)message + sequence_offset) = number;
            /* It holds a bytes object and an int, so it cannot be part of a reference cycle: out
               of the cyclic garbage collector's sight, as CPython keeps tuples of atomic values
               (its refcount still frees it). The collector's passes over the thousands of
               messages of each read cost about as much as building them (see the top). */
            if (untrack) {
                PyObject_GC_UnTrack(message);
            }
            int appended = PyList_Append(messages, message);
            Py_DECREF(message);
            if (appended < 0) {
                goto failed;
            }
            count++;
            position = stop;
            continue;
        }
        PyObject *message = NULL;
        int decoded = decode_other(state, packet, length, &message, &error);
        if (decoded < 0) {
            goto failed;
        }
        if (decoded > 0) {
            int appended = PyList_Append(messages, message);
            Py_DECREF(message);
            if (appended < 0) {
                goto failed;
            }
            position = stop;
        }
        break; /* after the first message that is not Sequenced Data, or at a malformed one */
    }
    if (has_view) {
        PyBuffer_Release(&view);
    }
    release_state(state);
    PyObject *result = PyTuple_New(4);
    /* Where nothing was consumed, the caller's own position object (it may be beyond a C size). */
    PyObject *stopped_at = position == start ? Py_NewRef(position_object) : PyLong_FromSsize_t(position);
    if (result == NULL || stopped_at == NULL) {
        Py_XDECREF(result);
        Py_XDECREF(stopped_at);
        Py_DECREF(messages);
        Py_XDECREF(error);
        Py_DECREF(counter.number);
        return NULL;
    }
    PyObject_GC_Track(messages);
    PyTuple_SET_ITEM(result, 0, messages);
    PyTuple_SET_ITEM(result, 1, stopped_at);
    PyTuple_SET_ITEM(result, 2, counter.number);
    PyTuple_SET_ITEM(result, 3, error != NULL ? error : Py_NewRef(Py_None));
    return result;

failed:
    Py_DECREF(messages);
    Py_XDECREF(error);
failed_early:
    Py_DECREF(counter.number);
    if (has_view) {
        PyBuffer_Release(&view);
    }
    release_state(state);
    return NULL;
}

PyDoc_STRVAR(scan_packets_doc,
             "scan_packets(buffer, position, end, limit)\n--\n\n"
             "Step over whole Sequenced Data packets in buffer[position:end]: the compiled twin of\n"
             "framing.python_scan_packets, whose docstring is the contract.\n\n"
             "Returns (position, count, size). buffer may be any contiguous buffer. A negative\n"
             "position, or an end beyond the buffer, raises ValueError.");

static PyObject *
walker_scan_packets(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "scan_packets() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    Py_ssize_t position = PyNumber_AsSsize_t(args[1], NULL);
    if (position == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t end = PyNumber_AsSsize_t(args[2], NULL);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t limit = PyNumber_AsSsize_t(args[3], NULL);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (position < 0 || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError,
                        "scan_packets(): position must not be negative, nor end beyond the buffer");
        return NULL;
    }
    const unsigned char *buffer = (const unsigned char *)view.buf;
    Py_ssize_t count = 0, size = 0;
    /* No call into Python below: the buffer cannot change while it is read. */
    while (count < limit && position <= end - 3) {
        const Py_ssize_t length = ((Py_ssize_t)buffer[position] << 8) | buffer[position + 1];
        if (length == 0 || buffer[position + 2] != SEQUENCED_DATA || position + 2 + length > end) {
            size = 2 + length;
            goto done;
        }
        position += 2 + length;
        count++;
    }
    if (position <= end - 2) {
        size = 2 + (((Py_ssize_t)buffer[position] << 8) | buffer[position + 1]);
    }
done:
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnn)", position, count, size);
}

PyDoc_STRVAR(frame_sequenced_doc,
             "frame_sequenced(payloads)\n--\n\n"
             "Frame payloads (a list or tuple of bytes-like objects) as consecutive Sequenced Data\n"
             "packets in one bytes object: the compiled twin of framing.python_frame_sequenced,\n"
             "whose docstring is the contract. A payload over 65,534 bytes raises ValueError.");

/* The payload bytes of one item, or -1 with an exception set. A bytes object needs no buffer. */
static Py_ssize_t
payload_size(PyObject *item, Py_buffer *view, int *has_view)
{
    *has_view = 0;
    if (PyBytes_CheckExact(item)) {
        return PyBytes_GET_SIZE(item);
    }
    if (PyObject_GetBuffer(item, view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    *has_view = 1;
    return view->len;
}

static PyObject *
walker_frame_sequenced(PyObject *module, PyObject *payloads)
{
    PyObject *sequence = PySequence_Fast(payloads, "frame_sequenced() takes a list or tuple of payloads");
    if (sequence == NULL) {
        return NULL;
    }
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(sequence);
    PyObject **items = PySequence_Fast_ITEMS(sequence);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer view;
        int has_view;
        const Py_ssize_t size = payload_size(items[i], &view, &has_view);
        if (has_view) {
            PyBuffer_Release(&view);
        }
        if (size < 0) {
            Py_DECREF(sequence);
            return NULL;
        }
        if (size > 65534) {
            Py_DECREF(sequence);
            return PyErr_Format(PyExc_ValueError, "payload of %zd bytes exceeds 65534", size);
        }
        total += size + 3;
    }
    PyObject *framed = PyBytes_FromStringAndSize(NULL, total);
    if (framed == NULL) {
        Py_DECREF(sequence);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(framed);
    /* The sizes were read above; an item's buffer could have changed only through Python code,
       and none runs between the two passes except a buffer export, so each size is read again
       and checked against what is left. */
    unsigned char *const end = out + total;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_buffer view;
        int has_view;
        const Py_ssize_t size = payload_size(items[i], &view, &has_view);
        if (size < 0 || size > 65534 || out + 3 + size > end) {
            if (has_view) {
                PyBuffer_Release(&view);
            }
            Py_DECREF(framed);
            Py_DECREF(sequence);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "frame_sequenced(): a payload changed size while framed");
            }
            return NULL;
        }
        const Py_ssize_t length = size + 1;
        out[0] = (unsigned char)(length >> 8);
        out[1] = (unsigned char)(length & 0xFF);
        out[2] = SEQUENCED_DATA;
        memcpy(out + 3, has_view ? view.buf : PyBytes_AS_STRING(items[i]), (size_t)size);
        out += 3 + size;
        if (has_view) {
            PyBuffer_Release(&view);
        }
    }
    Py_DECREF(sequence);
    if (out != end) {
        Py_DECREF(framed);
        PyErr_SetString(PyExc_ValueError, "frame_sequenced(): a payload changed size while framed");
        return NULL;
    }
    return framed;
}

static PyMethodDef walker_methods[] = {
    {"frame_sequenced", (PyCFunction)walker_frame_sequenced, METH_O, frame_sequenced_doc},
    {"setup", (PyCFunction)(void (*)(void))walker_setup, METH_FASTCALL, setup_doc},
    {"walk_packets", (PyCFunction)(void (*)(void))walker_walk_packets, METH_FASTCALL, walk_packets_doc},
    {"scan_packets", (PyCFunction)(void (*)(void))walker_scan_packets, METH_FASTCALL, scan_packets_doc},
    {NULL, NULL, 0, NULL},
};

static int
walker_traverse(PyObject *module, visitproc visit, void *arg)
{
    walker_state *state = get_state(module);
    Py_VISIT(state->sequenced_type);
    Py_VISIT(state->decode_payload);
    Py_VISIT(state->invalid_message);
    Py_VISIT(state->length_error);
    return 0;
}

static int
walker_clear(PyObject *module)
{
    walker_state *state = get_state(module);
    Py_CLEAR(state->sequenced_type);
    Py_CLEAR(state->decode_payload);
    Py_CLEAR(state->invalid_message);
    Py_CLEAR(state->length_error);
    return 0;
}

static void
walker_free(void *module)
{
    walker_clear((PyObject *)module);
}

static PyModuleDef_Slot walker_slots[] = {
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc, "The compiled packet walker of nasdaq_protocols.soup.framing (see walk_packets).");

static struct PyModuleDef walker_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nasdaq_protocols.soup.cwalker",
    .m_doc = module_doc,
    .m_size = sizeof(walker_state),
    .m_methods = walker_methods,
    .m_slots = walker_slots,
    .m_traverse = walker_traverse,
    .m_clear = walker_clear,
    .m_free = walker_free,
};

PyMODINIT_FUNC
PyInit_cwalker(void)
{
    return PyModuleDef_Init(&walker_module);
}
