"""galframe bench: the reference comparisons, reproducible with one command.

Suites (``galframe bench <suite> --profile small|full``; ``galframe_bench/conf/bench.yaml`` holds the profiles):

* ``fewshot``: macro and rare-class AUC against labels for ResNet18 from scratch, the pretrained LVM with
  the classify task (linear probe and fine-tuned) and the probe grown by HITL acquisition
  (:mod:`galframe_bench.fewshot`);
* ``detect``: LVM + Mask R-CNN against ResNet50 + Mask R-CNN against SEP on simulated fields
  (:mod:`galframe_bench.detect`);
* ``restore`` and ``params``: galframe's restore and regress tasks against classical methods
  (Richardson-Lucy, wavelets; HSM, Sersic fits) on the same held-out objects; one run gives both
  tables (:mod:`galframe_bench.classical`);
* ``throughput``: objects per second through ``galframe predict`` per backbone against the bare backbone,
  and peak memory (:mod:`galframe_bench.throughput`);
* ``all``: every suite, then ``report.md`` with every table and plot.
"""
