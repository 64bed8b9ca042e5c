#!/usr/bin/env python3
"""Instructions by library in a callgrind file: each function's own cost,
summed by the object it is in. callgrind_split.py FILE [REQUESTS] divides by
REQUESTS (what proxy.sh's BENCH_CALLGRIND counted) to print per request."""
import collections
import re
import sys


def main(path, requests=1.0):
    names, objects, fn_object = {}, {}, {}
    cost = collections.Counter()
    obj = fn = None
    after_call = False

    def name(table, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2):
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), value)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("ob="):
                obj = name(objects, line[3:])
            elif line.startswith("cob="):
                name(objects, line[4:])
            elif line.startswith("fn="):
                fn = name(names, line[3:])
                fn_object[fn] = obj
            elif line.startswith("cfn="):
                name(names, line[4:])
            elif line.startswith("calls="):
                after_call = True      # the next cost line is the call's, not the function's own
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if fn is not None and len(parts) >= 2 and parts[1].isdigit():
                    cost[fn_object.get(fn)] += int(parts[1])
    total = sum(cost.values())
    for o, v in cost.most_common():
        print("%10.0f %5.1f%% %s" % (v / requests, 100.0 * v / total, (o or "?").split("/")[-1]))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0)
