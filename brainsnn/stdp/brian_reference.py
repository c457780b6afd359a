"""The frozen conv STDP stack simulated in Brian2 (unrolled synapses), the reference the
torch extraction is tested against."""
from __future__ import annotations

import brian2 as b2
import numpy as np

from brainsnn.errors import ConvSTDPError
from brainsnn.stdp.backres import is_additive, pass_layer, stage_layer, stage_passes
from brainsnn.stdp.stack import SpikingConvStack, resting_potential


def _conv_synapses(in_shape, layer, pool_in=1, pre_shape=None):
    """(i, j, kernel index) of the unrolled synapses of one conv layer.

    ``in_shape`` is the (C, H, W) shape the conv sees; with ``pool_in`` > 1 the presynaptic
    neurons are the un-pooled neurons of the layer below (shape (C, H*pool, W*pool)) and every
    one of them connects to the pooled cell's targets (average pooling folded into the
    synapses: the weight is divided by pool**2 by the caller).
    Returns arrays i (pre index), j (post index), widx (flat index into kernels).
    """
    C, H, W = in_shape
    _, preH, preW = pre_shape if pre_shape is not None else in_shape
    K, k, st, pad = layer.n_kernels, layer.kernel_size, layer.stride, layer.padding
    _, Ho, Wo = layer.conv_shape(in_shape)
    ii, jj, ww = [], [], []
    ko, yo, xo = np.meshgrid(np.arange(K), np.arange(Ho), np.arange(Wo), indexing="ij")
    post = (ko * Ho + yo) * Wo + xo
    for c in range(C):
        for dy in range(k):
            for dx in range(k):
                y = yo * st - pad + dy
                xx = xo * st - pad + dx
                ok = (y >= 0) & (y < H) & (xx >= 0) & (xx < W)
                widx = ((ko * C + c) * k + dy) * k + dx
                for py in range(pool_in):
                    for px in range(pool_in):
                        pre = (c * preH + y * pool_in + py) * preW + xx * pool_in + px
                        ii.append(pre[ok])
                        jj.append(post[ok])
                        ww.append(widx[ok])
    return np.concatenate(ii), np.concatenate(jj), np.concatenate(ww)


def brian2_stack_spikes(stack: SpikingConvStack, input_spikes):
    """The frozen stack as a Brian2 network (runtime device) on given input spikes.

    ``input_spikes`` is a bool array ``(T, B, C, H, W)``; each image is simulated as its own
    copy of the network (block-diagonal synapses) in one run. Unrolled synapses carry the
    kernel elements as weights; average pooling is folded into the next layer's synapses
    (weight / pool**2); lateral inhibition connects the feature maps of one position. Returns
    a list per stage of lists per pass of bool arrays (T, B, K, H', W') of excitatory spikes.
    Only 'avg' pooling between stages is supported (spiking max pooling needs extra neurons).
    """
    x = np.asarray(input_spikes, dtype=bool)
    T, B = x.shape[:2]
    dt = stack.dt
    shape = tuple(x.shape[2:])
    n_in = int(np.prod(shape))
    tt, bb, *rest = np.nonzero(x)
    flat = np.ravel_multi_index(tuple(rest), shape) if len(tt) else np.zeros(0, int)
    gen = b2.SpikeGeneratorGroup(B * n_in, bb * n_in + flat, tt * dt, dt=dt, name="input")
    objects = [gen]
    monitors = []
    pre_group, pre_shape, pre_pool = gen, shape, 1

    def feedforward(pre, pre_shape, pre_pool, in_shape, post, layer, name):
        pre_i, post_j, widx = _conv_synapses(in_shape, layer, pre_pool, pre_shape)
        n_pre, n_post = int(np.prod(pre_shape)), post.N // B
        syn = b2.Synapses(pre, post, "w : 1", on_pre=f"{layer.exc_model.input_variable}_post += w",
                          name=name, dt=dt)
        syn.connect(i=(np.arange(B)[:, None] * n_pre + pre_i[None]).ravel(),
                    j=(np.arange(B)[:, None] * n_post + post_j[None]).ravel())
        syn.w = np.tile(layer.kernels.reshape(-1)[widx] / pre_pool ** 2, B)
        return syn

    for si, stage in enumerate(stack.stages):
        in_shape = pre_shape if pre_pool == 1 else (pre_shape[0], pre_shape[1] // pre_pool,
                                                     pre_shape[2] // pre_pool)
        block_in = (pre_group, pre_shape, pre_pool, in_shape)     # for the additive form
        conv = stage_layer(stage).conv_shape(in_shape)
        n_out = int(np.prod(conv))
        stage_mons = []
        for p in range(stage_passes(stage)):
            layer = pass_layer(stage, p)
            exc = layer.exc_model.neuron_group(B * n_out, name=f"exc_{si}_{p}", dt=dt)
            exc.plastic = 0
            exc.v = resting_potential(layer.exc_model) * b2.volt
            exc.theta = np.tile(np.repeat(layer.theta, n_out // layer.n_kernels), B) * b2.volt
            inh = layer.inh_model.neuron_group(B * n_out, name=f"inh_{si}_{p}", dt=dt)
            inh.v = resting_potential(layer.inh_model) * b2.volt
            syn = [feedforward(pre_group, pre_shape, pre_pool, in_shape, exc, layer, f"ff_{si}_{p}")]
            if p and is_additive(stage):         # y_r = B(y_(r-1) + x): the block's input too
                syn.append(feedforward(*block_in, exc, layer, f"ffx_{si}_{p}"))
            ei = b2.Synapses(exc, inh, on_pre=f"{layer.inh_model.input_variable}_post += {layer.w_exc_inh!r}",
                             name=f"ei_{si}_{p}", dt=dt)
            ei.connect(j="i")
            positions = n_out // layer.n_kernels
            ie = b2.Synapses(inh, exc, on_pre=f"gi_post += {layer.w_inh_exc!r}", name=f"ie_{si}_{p}",
                             dt=dt)
            # same image, same position (index modulo positions), another feature map
            bq, k1, k2 = np.meshgrid(np.arange(B * positions), np.arange(layer.n_kernels),
                                     np.arange(layer.n_kernels), indexing="ij")
            other = k1 != k2
            b_of, q_of = bq[other] // positions, bq[other] % positions
            ie.connect(i=b_of * n_out + k1[other] * positions + q_of,
                       j=b_of * n_out + k2[other] * positions + q_of)
            mon = b2.SpikeMonitor(exc, name=f"mon_{si}_{p}")
            if getattr(stack, "lateral_inhibition", True):
                objects += [exc, inh, *syn, ei, ie, mon]
            else:                       # extraction without lateral inhibition
                objects += [exc, *syn, mon]
            stage_mons.append((mon, n_out, conv))
            pre_group, pre_shape, pre_pool = exc, conv, 1
            in_shape = conv
        monitors.append(stage_mons)
        layer = stage_layer(stage)
        if layer.pool > 1:
            if layer.pooling != "avg":
                raise ConvSTDPError("the Brian2 reference supports only 'avg' pooling between "
                                    f"stages, stage {si} uses {layer.pooling!r}")
            pre_pool = layer.pool
    net = b2.Network(*objects)
    net.run(T * dt, namespace={})
    if b2.get_device().__class__.__name__ != "RuntimeDevice":
        b2.device.build(run=True, compile=True, with_output=False)
    out = []
    for stage_mons in monitors:
        st = []
        for mon, n_out, conv in stage_mons:
            arr = np.zeros((T, B * n_out), dtype=bool)
            arr[np.round(np.asarray(mon.t / dt)).astype(int), np.asarray(mon.i)] = True
            st.append(arr.reshape(T, B, *conv))
        out.append(st)
    return out
