/* tensorboard: see tensorboard.h. */
#include "tensorboard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "tensorboard.pb-c.h"
#include "util.h"

struct hcl_tb_values {
    Tensorboard__Summary__Value val[TB_MAX_SCALARS];
    Tensorboard__Summary__Value *ptr[TB_MAX_SCALARS];
    char tag[TB_MAX_SCALARS][HCL_JSON_PATH_MAX];
    int n;
    int64_t step;
    double wall;
};

/* ---- TFRecord framing ------------------------------------------------------------------------ */

/* TFRecord's mask of a CRC-32C (util.h's hcl_crc32c): rotated right 15 bits, plus a constant. */
uint32_t tb_masked_crc32c(const void *data, size_t n) {
    uint32_t c = hcl_crc32c(0, data, n);
    return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

static void put_le(uint8_t *p, uint64_t x, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(x >> (8 * i));
}

/* The Event as one record, written (or queued while the disk is full: append.h). */
static void write_event(hcl_tb *t, const Tensorboard__Event *ev) {
    if (!t->out.is_open) return;
    size_t n = tensorboard__event__get_packed_size(ev), need = n + 16;
    if (need > t->rec_cap) {
        uint8_t *grown = realloc(t->rec, need);
        HCL_CHECK(grown, "out of memory for a %zu-byte TensorBoard record", need);
        t->rec = grown, t->rec_cap = need;
    }
    uint8_t *r = t->rec;
    put_le(r, n, 8);
    put_le(r + 8, tb_masked_crc32c(r, 8), 4);
    tensorboard__event__pack(ev, r + 12);
    put_le(r + 12 + n, tb_masked_crc32c(r + 12, n), 4);
    append_put(&t->out, r, need);
}

/* ---- the records ------------------------------------------------------------------------------ */

static void write_header(hcl_tb *t, int64_t first_step, const char *config_text) {
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.wall_time = hcl_wall();
    ev.what_case = TENSORBOARD__EVENT__WHAT_FILE_VERSION;
    ev.file_version = "brain.Event:2";
    write_event(t, &ev);

    Tensorboard__SessionLog sl = TENSORBOARD__SESSION_LOG__INIT;
    sl.status = TENSORBOARD__SESSION_LOG__SESSION_STATUS__START;
    ev.step = first_step;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SESSION_LOG;
    ev.session_log = &sl;
    write_event(t, &ev);

    /* the configuration: a text summary (the text plugin reads markdown; indented, it is code) */
    size_t len = strlen(config_text), n = 0;
    char *md = hcl_malloc(2 * len + 8);
    for (const char *p = config_text; *p; p++) {
        if (p == config_text || p[-1] == '\n') md[n++] = ' ', md[n++] = ' ', md[n++] = ' ', md[n++] = ' ';
        md[n++] = *p;
        if (n + 8 > 2 * len + 8) break;
    }
    Tensorboard__SummaryMetadata__PluginData pd = TENSORBOARD__SUMMARY_METADATA__PLUGIN_DATA__INIT;
    pd.plugin_name = "text";
    Tensorboard__SummaryMetadata meta = TENSORBOARD__SUMMARY_METADATA__INIT;
    meta.plugin_data = &pd;
    Tensorboard__TensorShapeProto shape = TENSORBOARD__TENSOR_SHAPE_PROTO__INIT;
    Tensorboard__TensorProto tensor = TENSORBOARD__TENSOR_PROTO__INIT;
    tensor.dtype = TENSORBOARD__DATA_TYPE__DT_STRING;
    tensor.tensor_shape = &shape;
    ProtobufCBinaryData text = {n, (uint8_t *)md};
    tensor.n_string_val = 1;
    tensor.string_val = &text;
    Tensorboard__Summary__Value v = TENSORBOARD__SUMMARY__VALUE__INIT, *vp = &v;
    v.tag = "config";
    v.metadata = &meta;
    v.value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_TENSOR;
    v.tensor = &tensor;
    Tensorboard__Summary sum = TENSORBOARD__SUMMARY__INIT;
    sum.n_value = 1;
    sum.value = &vp;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    write_event(t, &ev);
    free(md);
}

int tb_open(hcl_tb *t, const char *dir, int64_t first_step, const char *config_text, char *err) {
    memset(t, 0, sizeof *t);
    if (hcl_mkdir_p(dir, err) != 0) return -1;
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    int n = snprintf(t->path, sizeof t->path, "%s/events.out.tfevents.%lld.%s.%d.hcl", dir, (long long)time(NULL),
                     host, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof t->path) return hcl_err(err, "%s: --tensorboard directory name too long", dir);
    if (append_open(&t->out, t->path, O_EXCL, err) != 0) return -1;
    t->v = hcl_calloc(1, sizeof *t->v);
    write_header(t, first_step, config_text);
    return 0;
}

/* A number of the line: the Event's step or time, or a scalar. */
static void take_number(void *arg, const char *path, double x) {
    hcl_tb_values *v = arg;
    if (!strcmp(path, "step")) {
        v->step = (int64_t)x;
    } else if (!strcmp(path, "time")) {
        v->wall = x;
    } else if (v->n < TB_MAX_SCALARS && !(!strncmp(path, "workers/", 8) && strstr(path, "/rank"))) {
        Tensorboard__Summary__Value *s = &v->val[v->n];
        tensorboard__summary__value__init(s);
        snprintf(v->tag[v->n], sizeof v->tag[v->n], "%s", path);
        s->tag = v->tag[v->n];
        s->value_case = TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        s->simple_value = (float)x;
        v->ptr[v->n] = s;
        v->n++;
    }
}

void tb_line(hcl_tb *t, const char *json) {
    if (!t->out.is_open) return;
    hcl_tb_values *v = t->v;
    v->n = 0, v->step = -1, v->wall = 0;
    if (json_walk_numbers(json, take_number, v) != 0 || v->step < 0 || v->n == 0) return;
    Tensorboard__Summary sum = TENSORBOARD__SUMMARY__INIT;
    sum.n_value = (size_t)v->n;
    sum.value = v->ptr;
    Tensorboard__Event ev = TENSORBOARD__EVENT__INIT;
    ev.wall_time = v->wall > 0 ? v->wall : hcl_wall();
    ev.step = v->step;
    ev.what_case = TENSORBOARD__EVENT__WHAT_SUMMARY;
    ev.summary = &sum;
    write_event(t, &ev);
}

int tb_flush(hcl_tb *t, char *err) { return append_flush(&t->out, err); }

void tb_close(hcl_tb *t) {
    append_close(&t->out);
    free(t->rec);
    free(t->v);
    memset(t, 0, sizeof *t);
}
