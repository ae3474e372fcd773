#!/usr/bin/env python3
"""Rounds of one plain scenario for scripts/bench.sh.

Input: the rows bench.sh's run_row wrote for the rounds (the results.tsv
format: scenario, path, messages, seconds, msg/s, relay CPU us/msg, sink CPU
us/msg, client CPU us/msg, relay peak RSS KiB, lost), two a round, in the
order they ran. Writes one line a round to OUT (round, the path that went
first, direct msg/s, postern msg/s, ratio, postern CPU us/msg, the sink's
us/msg direct and behind postern, postern's CPU over the sink's two halves, 1
on the median round), prints each round on stderr, and prints the median
round's two rows (by ratio, direct first) on stdout for the results table.
"""

import sys


def main():
    raw, out = sys.argv[1], sys.argv[2]
    with open(raw) as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    if len(rows) % 2:
        sys.exit(f"rounds: {len(rows)} rows, not two a round")
    rounds = []
    for i in range(0, len(rows), 2):
        pair = {r[1]: r for r in rows[i:i + 2]}
        d, p = pair.get("direct"), pair.get("postern")
        if d is None or p is None:
            sys.exit(f"rounds: round {i // 2 + 1} lacks a direct or a postern row")
        d_rate, p_rate = float(d[4]), float(p[4])
        p_us, d_sink, p_sink = int(p[5]), int(d[6]), int(p[6])
        ratio = p_rate / d_rate if d_rate > 0 else 0.0
        halves = d_sink + p_sink
        cpu = p_us / halves if halves > 0 else 0.0
        rounds.append({"round": i // 2 + 1, "first": rows[i][1], "rows": (d, p), "direct": d_rate,
                       "postern": p_rate, "ratio": ratio, "postern_us": p_us, "direct_sink": d_sink,
                       "postern_sink": p_sink, "cpu": cpu})
    # The median by ratio: the middle one of an odd count, the lower middle of an even one.
    by_ratio = sorted(rounds, key=lambda r: r["ratio"])
    median = by_ratio[(len(by_ratio) - 1) // 2]
    with open(out, "w") as f:
        for r in rounds:
            line = (f"{r['round']}\t{r['first']}\t{r['direct']:.1f}\t{r['postern']:.1f}\t{r['ratio']:.4f}\t"
                    f"{r['postern_us']}\t{r['direct_sink']}\t{r['postern_sink']}\t{r['cpu']:.4f}\t"
                    f"{1 if r is median else 0}")
            f.write(line + "\n")
            print(f"rounds: round {r['round']} ({r['first']} first): ratio {r['ratio']:.2f}, "
                  f"postern CPU {r['cpu']:.2f}x the sink's two halves", file=sys.stderr)
    for row in median["rows"]:
        print("\t".join(row))


if __name__ == "__main__":
    main()
