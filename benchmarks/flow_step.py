"""The cost of one background-flow training step, by zuko's own spline and by streammix.nsf.

Usage::

    python benchmarks/flow_step.py [--features 3 6] [--batch 4096] [--steps 30] [--threads 1]

For each block size D, builds a ``ConditionalFlow`` with the default ``FlowConfig``
(3 transforms, 2 hidden layers of 32, 8 bins) and one extra context column, and
times on the same random batch (standard normal coordinates, phi1 uniform):

- a training step (log-density, its mean's gradient, an AdamW step) with the
  log-density of ``flow.net(context).log_prob(z)``, zuko's general path with
  ``ConditionalFlow``'s short softmax (what training used before it went through
  :mod:`streammix.nsf`), and with
  :func:`streammix.nsf.nsf_log_prob`, what ``ConditionalFlow.log_prob`` uses now;
- the log-density without gradients by both (scoring).

The two paths start from the same weights; the largest difference of their
gradients is printed beside the times (float32 rounding, ~1e-6 relative).
Run one job at a time; times are comparable only on the same machine.
"""

from __future__ import annotations

import argparse
import time

from _common import emit, machine


def _ms_per_call(call, calls: int) -> float:
    """Milliseconds per call of ``call``, after three calls to warm up."""
    for _ in range(3):
        call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[3, 6])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from streammix.config import FlowConfig
    from streammix.flows import ConditionalFlow, _ShortSoftmax
    from streammix.nsf import nsf_log_prob

    torch.set_num_threads(args.threads)
    rows = []
    for features in args.features:
        torch.manual_seed(0)
        flow = ConditionalFlow(features, FlowConfig(), context_low=[-1.0], context_high=[1.0])
        z = torch.randn(args.batch, features)
        context = flow._context(torch.rand(args.batch) * 2 - 1, torch.rand(args.batch, 1) * 2 - 1)
        def zuko_log_prob():
            with _ShortSoftmax():  # as ConditionalFlow ran zuko's path
                return flow.net(context).log_prob(z)

        paths = {
            "zuko": zuko_log_prob,
            "streammix.nsf": lambda: nsf_log_prob(flow.net, z, context),
        }
        gradients = {}
        for name, log_prob in paths.items():
            flow.zero_grad()
            (-log_prob().mean()).backward()
            gradients[name] = [p.grad.clone() for p in flow.parameters()]
        difference = max(float((a - b).abs().max()) for a, b in zip(*gradients.values(), strict=True))
        scale = max(float(g.abs().max()) for g in gradients["zuko"])
        row = {"features": features, "gradient_difference": difference, "gradient_scale": scale}
        state = {k: v.clone() for k, v in flow.state_dict().items()}
        for name, log_prob in paths.items():
            flow.load_state_dict(state)
            optimizer = torch.optim.AdamW(flow.parameters(), lr=1e-3)

            def step():
                optimizer.zero_grad()
                (-log_prob().mean()).backward()
                optimizer.step()

            row[f"train_ms_{name}"] = _ms_per_call(step, args.steps)
            with torch.no_grad():
                row[f"score_ms_{name}"] = _ms_per_call(log_prob, args.steps)
        rows.append(row)
        print(
            f"D={features}, batch {args.batch}, {args.threads} thread(s): training step "
            f"{row['train_ms_zuko']:.1f} ms (zuko) -> {row['train_ms_streammix.nsf']:.1f} ms (streammix.nsf); "
            f"scoring {row['score_ms_zuko']:.1f} -> {row['score_ms_streammix.nsf']:.1f} ms; "
            f"largest gradient difference {difference:.2e} (of up to {scale:.2f})"
        )
    emit({"benchmark": "flow_step", "batch": args.batch, "threads": args.threads, "rows": rows, "machine": machine()})


if __name__ == "__main__":
    main()
