"""Operation counts and energy per image of ANN, SNN and hybrid networks.

As defined in this project (docs/techniques.md), per inference of one image:

* an **artificial** layer costs its multiply-accumulates (MACs) times E_MAC;
* a **spiking** layer fed by spikes costs its synaptic operations over the T steps,
  MACs x (mean number of input spikes per input neuron over the T steps), times E_AC;
* a spiking layer fed by an **analog** input (a direct-coded image, or an artificial layer in
  a hybrid network) receives a constant input current: this project computes that current
  once per image, so it costs MACs x E_MAC (``analog_input='once'``, the default). The
  option ``analog_input='per_step'`` charges T x MACs x E_MAC instead (the current
  recomputed at every step), the more pessimistic convention;
* average pooling and flatten cost nothing here (pooling is folded into the next layer's
  synapses: a spike of a pooled neuron is one event per synapse of the pooled cell);
* a BackRes block counts once per pass (each pass is a logical layer).

E_MAC = 4.6 pJ and E_AC = 0.9 pJ (32-bit float, 45 nm; Horowitz 2014). The ANN reference is
the same network with every layer artificial: sum of MACs x E_MAC. Energies are in joules per
image; spike counts come from :attr:`brainsnn.engine.network.Network.stats` (run the network with
``network.record = True`` on the evaluation images first; :func:`measure` does this).
"""
from __future__ import annotations

import torch
from brainsnn.errors import EnergyError  # noqa: F401

__all__ = ["E_MAC", "E_AC", "EnergyError", "layer_energy", "energy_report", "ann_energy",
           "measure", "write_energy", "format_report"]

#: Energy of one 32-bit multiply-accumulate (joules).
E_MAC = 4.6e-12
#: Energy of one 32-bit accumulate (joules).
E_AC = 0.9e-12




def ann_energy(network, e_mac=E_MAC):
    """Energy per image (J) of the equivalent ANN: every weighted logical layer x E_MAC."""
    return {ll.name: ll.macs * e_mac for ll in network.layers if ll.spec.weighted}


def layer_energy(kind, macs, input_spikes_per_neuron=None, analog=False, T=1,
                 e_mac=E_MAC, e_ac=E_AC, analog_input="once"):
    """Energy (J) and operation count of one layer for one image (see module docstring).

    Returns ``(energy_J, operations, op_type)`` with op_type 'MAC' or 'AC'.
    """
    if kind == "artificial":
        return macs * e_mac, float(macs), "MAC"
    if kind != "spiking":
        raise EnergyError(f"layer kind must be 'spiking' or 'artificial', got {kind!r}")
    if analog:
        if analog_input == "once":
            return macs * e_mac, float(macs), "MAC"
        if analog_input == "per_step":
            return T * macs * e_mac, float(T * macs), "MAC"
        raise EnergyError(f"analog_input must be 'once' or 'per_step', got {analog_input!r}")
    if input_spikes_per_neuron is None:
        raise EnergyError("a spiking layer fed by spikes needs its measured input spike count")
    ops = macs * float(input_spikes_per_neuron)
    return ops * e_ac, ops, "AC"


def energy_report(network, e_mac=E_MAC, e_ac=E_AC, analog_input="once"):
    """Per-layer energy of ``network`` from its recorded statistics.

    Returns a dict ``{'layers': {name: {...}}, 'total': J, 'ann_total': J, 'ratio_to_ann': x,
    'T': T, 'images': n, 'e_mac': ..., 'e_ac': ..., 'analog_input': ...}``; each layer entry
    holds kind, macs, op_type, operations, input_spikes_per_neuron (over T), spike_rate
    (output spikes per neuron per step, spiking layers) and energy (J per image).
    """
    stats = network.stats
    n = stats.get("images", 0)
    if not n:
        raise EnergyError("no spike statistics: run the network with network.record = True "
                          "on some images first (brainsnn.analysis.energy.measure does this)")
    T = stats["T"]
    layers, total = {}, 0.0
    for ll in network.layers:
        if not ll.spec.weighted:
            continue
        st = stats["layers"].get(ll.name)
        if st is None:
            raise EnergyError(f"layer {ll.name!r} has no recorded statistics")
        analog = bool(st["input_analog"])
        per_neuron = None if analog else st["input_count"] / (st["input_neurons"] * n)
        e, ops, op_type = layer_energy(ll.kind, ll.macs, per_neuron, analog, T, e_mac, e_ac,
                                       analog_input)
        entry = {"kind": ll.kind, "macs": ll.macs, "op_type": op_type, "operations": ops,
                 "energy": e, "analog_input": analog,
                 "input_spikes_per_neuron": float("nan") if per_neuron is None else per_neuron}
        if ll.neuron_key is not None:
            entry["spike_rate"] = st["output_spikes"] / (st["output_neurons"] * n * T)
        layers[ll.name] = entry
        total += e
    ann = sum(ann_energy(network, e_mac).values())
    return {"layers": layers, "total": total, "ann_total": ann,
            "ratio_to_ann": total / ann if ann else float("nan"), "T": T, "images": n,
            "e_mac": e_mac, "e_ac": e_ac, "analog_input": analog_input}


@torch.no_grad()
def measure(network, images, batch_size=256, T=None, device=None, **kwargs):
    """Run ``network`` on ``images`` with recording on and return :func:`energy_report`."""
    was_training = network.training
    network.eval()
    network.reset_stats()
    network.record = True
    device = device or next(network.parameters()).device
    try:
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(images[i:i + batch_size], dtype=torch.float32, device=device)
            network(x, T=T)
    finally:
        network.record = False
        network.train(was_training)
    return energy_report(network, **kwargs)


def write_energy(rec, report, prefix="energy"):
    """Store a report in a :class:`brainsnn.io.results.RunResults` (energy/<layer>, energy/total).

    Also stores ``layers/<name>/spike_rate`` (spikes per neuron per step) for spiking layers.
    """
    for name, e in report["layers"].items():
        rec.set(f"{prefix}/{name}", float(e["energy"]), units="J/image", kind=e["kind"],
                macs=int(e["macs"]), op_type=e["op_type"], operations=float(e["operations"]),
                input_spikes_per_neuron=float(e["input_spikes_per_neuron"]))
        if "spike_rate" in e:
            rec.set(f"layers/{name}/spike_rate", float(e["spike_rate"]),
                    units="spikes per neuron per step", T=int(report["T"]))
    rec.set(f"{prefix}/total", float(report["total"]), units="J/image",
            ann_total=float(report["ann_total"]), ratio_to_ann=float(report["ratio_to_ann"]),
            e_mac=float(report["e_mac"]), e_ac=float(report["e_ac"]), T=int(report["T"]),
            images=int(report["images"]), analog_input=report["analog_input"])


def format_report(report):
    """A readable table of a report (pJ / nJ per image)."""
    lines = [f"{'layer':<16}{'kind':<12}{'MACs':>12}{'in spikes/neuron':>18}{'ops':>14}"
             f"{'type':>5}{'energy nJ':>12}"]
    for name, e in report["layers"].items():
        lines.append(f"{name:<16}{e['kind']:<12}{e['macs']:>12d}"
                     f"{e['input_spikes_per_neuron']:>18.4f}{e['operations']:>14.4g}"
                     f"{e['op_type']:>5}{e['energy'] * 1e9:>12.4f}")
    lines.append(f"total {report['total'] * 1e9:.4f} nJ/image; ANN {report['ann_total'] * 1e9:.4f}"
                 f" nJ/image; ratio {report['ratio_to_ann']:.4f} (T={report['T']})")
    return "\n".join(lines)
