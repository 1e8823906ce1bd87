/* conv: the image encoder's convolution stages ("conv:C1,C2,..." of a view), on oneDNN.
 *
 * Stage s: 3x3 convolution (stride 1, padding 1, bias) -> ReLU -> 2x2 max pooling (stride 2, no
 * padding: H/2 and W/2 rounded down). After the last stage, global average pooling over H x W
 * gives the feature (B, C_last); the projection and L2 normalisation after it are model.c's.
 *
 * Layouts: activations NHWC (a dataset row is H*W*C floats in HWC order, so x is (B, H, W, C));
 * weights PyTorch's (Cout, Cin, 3, 3) (oneDNN's oihw); bias (Cout). Activations are never
 * reordered; weights and their gradients are, to and from the primitives' blocked formats.
 *
 * A net holds its own oneDNN engine and stream, every activation buffer for max_rows (allocated
 * by conv_net_init, never in a step) and a small cache of primitives per batch size B: a B's
 * primitives are created at its first forward, then reused. One thread uses a net at a time;
 * oneDNN's OpenMP team is kernels_get_threads() threads (kernels.h). */
#ifndef HCL_CONV_H
#define HCL_CONV_H

#define HCL_MAX_CONV 6

typedef struct hcl_conv_net hcl_conv_net;   /* opaque: primitives, memory objects, activation buffers */

/* Stages for inputs (B, H, W, C), B <= max_rows, chans[0..nstages) output channels. 0, or -1 with
 * one line in err (e.g. an image too small for nstages poolings: name H, W and the stage; a build
 * without oneDNN: "the conv encoder needs oneDNN (libdnnl-dev); this build has none"). Allocates
 * every activation buffer for max_rows here. */
int conv_net_init(hcl_conv_net **n, int max_rows, int H, int W, int C, const int *chans, int nstages, char *err);
void conv_net_free(hcl_conv_net *n);
/* Size of the feature: chans[nstages-1]. */
int conv_net_out(const hcl_conv_net *n);
/* Forward of B rows: x (B, H, W, C); w[s] (Cout_s, Cin_s, 3, 3), b[s] (Cout_s); writes feat (B, C_last), the
 * global average pooling of the last stage's pooled output; keeps what the backward needs. x and
 * w[s] are read again by the backward (not copied): leave them unchanged until then. */
void conv_net_forward(hcl_conv_net *n, const float *x, const float *const *w, const float *const *b, int B, float *feat);
/* Backward of the last forward with dfeat (B, C_last): dw[s], db[s] written (beta 0) when overwrite, else added to (beta 1).
 * No gradient for x. */
void conv_net_backward(hcl_conv_net *n, const float *dfeat, float *const *dw, float *const *db, int B, int overwrite);
/* Floats of activations conv_net_init allocates for max_rows (for the memory estimate): every
 * buffer it allocates. Not counted: what a batch size's first forward adds, oneDNN's scratchpad
 * and the weights' copies in the primitives' formats (a few times the weights). */
double conv_net_act_floats(int max_rows, int H, int W, int C, const int *chans, int nstages);
/* Primitive sets (one per batch size) created so far, for the tests of the cache. */
int conv_net_created(const hcl_conv_net *n);

#endif
