"""Default STDP learning rates of the Diehl & Cook protocol, per rule (no Brian2 import, so
that command-line help stays fast)."""

#: Default --nu-post and --eta-final per rule. The triplet rule's were chosen on training images
#: only. First at constant plasticity (train on the first 10,000, label with images
#: 50,000-53,999, validate on 55,000-58,999; N=100): nu_post 0.005: 44.7 %, 0.01 (Diehl & Cook's
#: code): 74.3 %, 0.02: 78.9 %, 0.04: 82.0 %, 0.08: 81.7 %; the diehl_cook rule (x_tar 0.4, mu
#: 0.2, nu_post 0.01) reached 69.0 % there. Then for a whole pass (``--train-images 50000 --validation 10000``: train on the first 50,000, labels from the first 10,000, validate on
#: the last 10,000 training images; N=100, seed 0), nu_post / eta_final: 0.02 / 1: 82.78 %,
#: 0.04 / 1: 84.08 %, 0.04 / 0.25: 86.59 %, 0.08 / 0.125: 87.39 %, 0.16 / 0.0625: 87.54 %,
#: 0.08 / 0.05: 85.50 %. Plasticity falling to Diehl & Cook's rate (0.01) by the end of the
#: pass is what counts; 0.08 / 0.125 is the default. Test-set runs are in docs/results.md.
NU_POST = {"triplet": 0.08, "diehl_cook": 0.01, "pair": 0.01}
ETA_FINAL = {"triplet": 0.125, "diehl_cook": 1.0, "pair": 1.0}
