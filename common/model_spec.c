/* model_spec: the text of one view's encoder (model.h: hcl_encoder_spec), as `--encoder
 * VIEW=SPEC` gives it and a model file's `encoders` metadata records it. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_word[] = {"mlp", "bag", "conv"};

/* Comma-separated integers in 1..HCL_MAX_WIDTH from p up to end (or `none`): at most max. */
static int spec_ints(const char *p, const char *end, int *out, int max, int *n, const char *text, char *err) {
    *n = 0;
    if (end - p == 4 && strncmp(p, "none", 4) == 0) return 0;
    while (p < end) {
        char *stop;
        long v = strtol(p, &stop, 10);
        if (stop == p || stop > end || v < 1 || v > HCL_MAX_WIDTH || (stop < end && *stop != ','))
            return hcl_err(err, "encoder '%s': '%.*s' is not a list of widths in 1..%d", text, (int)(end - p), p,
                           HCL_MAX_WIDTH);
        if (*n == max) return hcl_err(err, "encoder '%s': more than %d widths", text, max);
        out[(*n)++] = (int)v;
        p = stop < end ? stop + 1 : stop;
        if (stop < end && p == end) return hcl_err(err, "encoder '%s': a width is missing after ','", text);
    }
    return 0;
}

/* `/vocab=V`, `/pad=P`, `/image=HxWxC` after the widths. */
static int spec_view_part(hcl_encoder_spec *s, const char *p, const char *text, char *err) {
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        if (!end) end = p + strlen(p);
        char item[64];
        if (end - p >= (long)sizeof item) return hcl_err(err, "encoder '%s': bad part '%.*s'", text, 32, p);
        memcpy(item, p, (size_t)(end - p));
        item[end - p] = 0;
        int h, w, c, v;
        char extra;
        if (s->kind == HCL_ENC_BAG && sscanf(item, "vocab=%d%c", &v, &extra) == 1) s->vocab = v;
        else if (s->kind == HCL_ENC_BAG && sscanf(item, "pad=%d%c", &v, &extra) == 1) s->pad = v;
        else if (s->kind == HCL_ENC_CONV && sscanf(item, "image=%dx%dx%d%c", &h, &w, &c, &extra) == 3) {
            s->img_h = h;
            s->img_w = w;
            s->img_c = c;
        } else {
            return hcl_err(err, "encoder '%s': unknown part '%s' for %s", text, item, kind_word[s->kind]);
        }
        p = end;
    }
    if (*p) return hcl_err(err, "encoder '%s': unexpected '%s'", text, p);
    return 0;
}

int model_spec_parse(hcl_encoder_spec *s, const char *text, char *err) {
    memset(s, 0, sizeof *s);
    s->pad = -1;
    const char *colon = strchr(text, ':');
    int k = -1;
    for (int i = 0; colon && i < 3; i++)
        if ((size_t)(colon - text) == strlen(kind_word[i]) && strncmp(text, kind_word[i], (size_t)(colon - text)) == 0) k = i;
    if (k < 0)
        return hcl_err(err, "encoder '%s': want mlp:W,W,... (or mlp:none), bag:E[,W,...] or conv:C1,C2,...", text);
    s->kind = k;
    const char *p = colon + 1, *end = strchr(p, '/');
    if (!end) end = p + strlen(p);
    int w[HCL_MAX_CONV + HCL_MAX_HIDDEN + 1], n;
    if (spec_ints(p, end, w, HCL_MAX_CONV + HCL_MAX_HIDDEN + 1, &n, text, err) != 0) return -1;
    if (k == HCL_ENC_MLP) {
        if (n > HCL_MAX_HIDDEN) return hcl_err(err, "encoder '%s': more than %d hidden widths", text, HCL_MAX_HIDDEN);
        s->nhidden = n;
        memcpy(s->hidden, w, sizeof(int) * (size_t)n);
    } else if (k == HCL_ENC_BAG) {
        if (n < 1 || n > HCL_MAX_HIDDEN + 1)
            return hcl_err(err, "encoder '%s': want bag:E then at most %d hidden widths", text, HCL_MAX_HIDDEN);
        s->embed = w[0];
        s->nhidden = n - 1;
        memcpy(s->hidden, w + 1, sizeof(int) * (size_t)(n - 1));
    } else {
        if (n < 1 || n > HCL_MAX_CONV)
            return hcl_err(err, "encoder '%s': want conv: then 1..%d channel counts", text, HCL_MAX_CONV);
        s->nconv = n;
        memcpy(s->chans, w, sizeof(int) * (size_t)n);
    }
    return spec_view_part(s, end, text, err);
}

void model_spec_format(const hcl_encoder_spec *s, int full, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "%s:", kind_word[s->kind]);
    const int *w = s->kind == HCL_ENC_CONV ? s->chans : s->hidden;
    int n = s->kind == HCL_ENC_CONV ? s->nconv : s->nhidden;
    if (s->kind == HCL_ENC_BAG) k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "%d", s->embed);
    else if (n == 0) k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "none");
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(out + k, k < cap ? cap - k : 0, "%s%d", i || s->kind == HCL_ENC_BAG ? "," : "", w[i]);
    if (full && s->kind == HCL_ENC_BAG)
        snprintf(out + k, k < cap ? cap - k : 0, "/vocab=%d/pad=%d", s->vocab, s->pad);
    if (full && s->kind == HCL_ENC_CONV)
        snprintf(out + k, k < cap ? cap - k : 0, "/image=%dx%dx%d", s->img_h, s->img_w, s->img_c);
}

const int *model_view_hidden(const hcl_model_config *c, int v, int *n) {
    const hcl_encoder_spec *s = &c->spec[v];
    if (s->nhidden < 0) {
        *n = c->nhidden;
        return c->hidden;
    }
    *n = s->nhidden;
    return s->hidden;
}

int model_feature_width(const hcl_model_config *c, int v) {
    int n;
    const int *h = model_view_hidden(c, v, &n);
    if (n > 0) return h[n - 1];
    const hcl_encoder_spec *s = &c->spec[v];
    return s->kind == HCL_ENC_BAG ? s->embed : s->kind == HCL_ENC_CONV ? s->chans[s->nconv - 1] : c->in_width[v];
}

int model_spec_same(const hcl_model_config *a, const hcl_model_config *b, int v) {
    const hcl_encoder_spec *x = &a->spec[v], *y = &b->spec[v];
    int na, nb;
    const int *ha = model_view_hidden(a, v, &na), *hb = model_view_hidden(b, v, &nb);
    if (x->kind != y->kind || na != nb || memcmp(ha, hb, sizeof(int) * (size_t)na) != 0) return 0;
    if (x->kind == HCL_ENC_BAG) return x->embed == y->embed && x->vocab == y->vocab && x->pad == y->pad;
    if (x->kind == HCL_ENC_CONV)
        return x->nconv == y->nconv && memcmp(x->chans, y->chans, sizeof(int) * (size_t)x->nconv) == 0 &&
               x->img_h == y->img_h && x->img_w == y->img_w && x->img_c == y->img_c;
    return 1;
}
