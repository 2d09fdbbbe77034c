"""Differential privacy: settings, the accountant, DP-SGD for the FAM, the privacy ledger and site-level
DP-FedAvg (docs/design.md §3.15, §6.5). ``config``, ``ledger``, ``accountant`` and ``dp_fedavg`` are
torch-free, so the aggregator can import them."""
