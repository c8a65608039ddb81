"""Where the time of a profiled verl stage goes: a JSON summary of PyTorch profiler Chrome traces.

verl's torch profiler (`global_profiler.tool=torch`, `discrete=True`) writes one `*.json.gz` Chrome trace per
profiled stage of a training step (the actor's and the reference model's log-probs, the actor's update, the
update cut into files by mini-batch range), ~200,000 events each: too many to read in a viewer stage by stage.
This script condenses each trace to the numbers that say whether the GPU or the host sets the pace, and what the
host does while the GPU waits:

- the wall span: the profiler's own span (its "Trace" event; else the first event's start to the last one's end;
  after that span come only the profiler's teardown and the annotations it closed then) and the GPU's busy time
  in it: the union, over all streams, of the intervals of kernel, memcpy and memset events (categories `kernel`,
  `gpu_memcpy`, `gpu_memset`; the `gpu_user_annotation` spans only label kernels and are left out);
- the kernels' count, the memory copies' count, time and bytes per direction (HtoD, DtoH, DtoD), and the top
  kernels by summed time;
- the top host events by self time: each host thread's events (`cpu_op`, `python_function`, `user_annotation`,
  `cuda_runtime`, `cuda_driver`) nest into a tree by their intervals, and an event's self time is its duration less
  its direct children's. Without `python_function` events (traces recorded without stacks, as verl's are by
  default) the Python between operators counts as the self time of the annotation around it (verl's
  `micro_batch0`, ...), and so does a thread's waiting outside any operator (the update's main thread while the
  autograd thread runs the backward);
- the GPU's idle gaps longer than 1 ms, the stretches before its first event and after its last included: their
  count and summed time, and the longest ones with the host events that overlap them most (`cpu_op`,
  `python_function`, `user_annotation`; of equal overlaps, such as the events that enclose the whole gap, the
  shortest first: the innermost enclosing event names what the host was doing).

Traces are listed in the order they were recorded (their clock is the process's), each with its start after the
first one's. Times are milliseconds, offsets from the trace's start. Written to --out, with the command that
produced the traces (--command); a table of one line per trace is printed.

    python bench/trace_summary.py TRACE.json.gz [TRACE.json.gz ...] --out bench/results/NAME.json
        [--command "the command that produced the traces"]
"""
import argparse
import gzip
import json
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATEGORIES = ("cpu_op", "python_function", "user_annotation", "cuda_runtime", "cuda_driver")
GAP_HOST_CATEGORIES = ("cpu_op", "python_function", "user_annotation")
IDLE_GAP_MS = 1.0
TOP_KERNELS = 12
TOP_HOST_EVENTS = 12
LONGEST_GAPS = 8
GAP_HOST_EVENTS = 3
NAME_CHARS = 120
# verl's names: <role>_<stage>_step<N>_rank<R>-of-<W>_pid<P>_<timestamp>[_mb<first>-<last>].json.gz
TRACE_FILE_NAME = re.compile(r"[^_]+_(?P<stage>[^_]+)_step(?P<step>\d+)_rank(?P<rank>\d+)-of-\d+_pid\d+_\d+"
                             r"(?:_(?P<part>mb[\d-]+))?\.json\.gz")

Event = dict
Interval = tuple[float, float]  # (start, end), microseconds


def milliseconds(microseconds: float) -> float:
    return round(microseconds / 1e3, 3)


def load_complete_events(path: Path) -> list[Event]:
    """The trace's complete events (phase "X": those with a duration); flow arrows and metadata are dropped."""
    with gzip.open(path, "rt") as trace:
        return [event for event in json.load(trace)["traceEvents"] if event.get("ph") == "X"]


def trace_file_fields(name: str) -> dict:
    """Stage, step, rank and mini-batch range (`part`, absent when the stage is one file) from verl's file name;
    the stage is the name itself when it does not follow verl's pattern."""
    match = TRACE_FILE_NAME.fullmatch(name)
    if match is None:
        return {"stage": name.removesuffix(".json.gz"), "step": None, "rank": None, "part": None}
    return {"stage": match["stage"], "step": int(match["step"]), "rank": int(match["rank"]), "part": match["part"]}


def interval(event: Event) -> Interval:
    return event["ts"], event["ts"] + event.get("dur", 0.0)


def union(intervals: list[Interval], window: Interval) -> list[Interval]:
    """The intervals cut to `window` and merged where they overlap or touch, in order."""
    merged: list[list[float]] = []
    cut = [(max(start, window[0]), min(end, window[1])) for start, end in intervals]
    for start, end in sorted((start, end) for start, end in cut if start < end):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def idle_gaps(busy: list[Interval], span: Interval, shortest_us: float) -> list[Interval]:
    """The stretches of `span` outside the sorted, disjoint `busy` intervals that last longer than `shortest_us`."""
    gaps, idle_since = [], span[0]
    for start, end in busy:
        gaps.append((idle_since, start))
        idle_since = max(idle_since, end)
    gaps.append((idle_since, span[1]))
    return [(start, end) for start, end in gaps if end - start > shortest_us]


def memcpy_totals(copies: list[Event]) -> dict[str, dict]:
    """Per direction (the second word of names such as "Memcpy HtoD (Pageable -> Device)"): count, ms and bytes."""
    totals: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0, "bytes": 0})
    for copy in copies:
        direction = totals[copy["name"].split()[1]]
        direction["count"] += 1
        direction["ms"] += copy["dur"] / 1e3
        direction["bytes"] += copy.get("args", {}).get("bytes", 0)
    return {name: total | {"ms": round(total["ms"], 3)} for name, total in sorted(totals.items())}


def top_by_time(times: dict[tuple, list[float]], key_fields: tuple[str, ...], time_field: str) -> list[dict]:
    """The keys of {key: [calls, microseconds]} with the most time, best first; `key_fields` name the key's parts,
    the last being the name."""
    ranked = sorted(times.items(), key=lambda item: item[1][1], reverse=True)
    return [dict(zip(key_fields, key[:-1])) | {"name": key[-1][:NAME_CHARS], "calls": int(calls),
                                               time_field: milliseconds(us)} for key, (calls, us) in ranked]


def top_kernels(kernels: list[Event]) -> list[dict]:
    times: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0])
    for kernel in kernels:
        times[(kernel["name"],)][0] += 1
        times[(kernel["name"],)][1] += kernel["dur"]
    return top_by_time(times, ("name",), "total_ms")[:TOP_KERNELS]


def host_self_times(host_events: list[Event]) -> dict[tuple[str, str], list[float]]:
    """{(category, name): [calls, self microseconds]}, each thread's events nested by their intervals."""
    threads: dict[tuple, list[Event]] = defaultdict(list)
    for event in host_events:
        threads[(event["pid"], event["tid"])].append(event)
    times: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])

    def close(frame: list) -> None:  # frame: [end, children's microseconds, event]
        _, children, event = frame
        times[(event["cat"], event["name"])][0] += 1
        times[(event["cat"], event["name"])][1] += max(0.0, event["dur"] - children)

    for events in threads.values():
        open_frames: list[list] = []
        for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            start, end = interval(event)
            while open_frames and open_frames[-1][0] <= start:
                close(open_frames.pop())
            if open_frames:
                open_frames[-1][1] += min(end, open_frames[-1][0]) - start
            open_frames.append([end, 0.0, event])
        for frame in open_frames:
            close(frame)
    return times


def overlapping_host_events(gap: Interval, host_events: list[Event], origin: float) -> list[dict]:
    """The host events that overlap `gap` most; ties (the gap's enclosing events) go to the shortest."""
    overlaps = []
    for event in host_events:
        start, end = interval(event)
        if start < gap[1] and end > gap[0]:
            overlaps.append((min(end, gap[1]) - max(start, gap[0]), event["dur"], event))
    overlaps.sort(key=lambda overlap: (-overlap[0], overlap[1]))
    return [{"name": event["name"][:NAME_CHARS], "category": event["cat"], "overlap_ms": milliseconds(overlap),
             "start_ms": milliseconds(event["ts"] - origin), "duration_ms": milliseconds(duration)}
            for overlap, duration, event in overlaps[:GAP_HOST_EVENTS]]


def idle_summary(busy: list[Interval], span: Interval, gap_host_events: list[Event]) -> dict:
    """The GPU's idle gaps over IDLE_GAP_MS: count, total and the longest with the host events beside them."""
    gaps = idle_gaps(busy, span, IDLE_GAP_MS * 1e3)
    longest = sorted(gaps, key=lambda gap: gap[1] - gap[0], reverse=True)[:LONGEST_GAPS]
    return {"count": len(gaps), "total_ms": milliseconds(sum(end - start for start, end in gaps)),
            "longest": [{"start_ms": milliseconds(start - span[0]), "length_ms": milliseconds(end - start),
                         "host_events": overlapping_host_events((start, end), gap_host_events, span[0])}
                        for start, end in longest]}


def recording_window(profiler_spans: list[Event], events: list[Event]) -> Interval:
    """The profiler's own span (its one "Trace" event) where the trace has it, else the first event's start to the
    last one's end. After that span come only the profiler's teardown (a few CUDA runtime calls) and the
    annotations still open when it stopped, cut there: up to 0.25 s that is no part of the stage."""
    if len(profiler_spans) == 1:
        return interval(profiler_spans[0])
    return min(event["ts"] for event in events), max(interval(event)[1] for event in events)


def summarize(path: Path, events: list[Event] | None = None) -> dict:
    """The summary of one trace file (see the module's docstring); `events`: its complete events, if already read."""
    events = load_complete_events(path) if events is None else events
    by_category: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_category[event.get("cat", "")].append(event)
    span = recording_window(by_category["Trace"], events)
    busy = union([interval(event) for category in GPU_CATEGORIES for event in by_category[category]], span)
    busy_us = sum(end - start for start, end in busy)
    host_events = [event for category in HOST_CATEGORIES for event in by_category[category]]
    return {"file": path.name, **trace_file_fields(path.name), "trace_start_us": span[0],
            "wall_ms": milliseconds(span[1] - span[0]), "gpu_busy_ms": milliseconds(busy_us),
            "gpu_busy_fraction": round(busy_us / (span[1] - span[0]), 4),
            "kernels": len(by_category["kernel"]), "memcpy": memcpy_totals(by_category["gpu_memcpy"]),
            "top_kernels": top_kernels(by_category["kernel"]),
            "top_host_self_time": top_by_time(host_self_times(host_events), ("category", "name"),
                                              "self_ms")[:TOP_HOST_EVENTS],
            "gpu_idle_gaps": idle_summary(busy, span, [event for category in GAP_HOST_CATEGORIES
                                                       for event in by_category[category]])}


def print_table(summaries: list[dict]) -> None:
    """One line per trace: stage, start (seconds after the first trace's), wall, GPU busy, idle gaps."""
    print(f"{'stage':<32} {'start s':>7} {'wall ms':>9} {'GPU busy ms':>11} {'busy':>6} {'gaps>1ms ms':>11}")
    for summary in summaries:
        stage = " ".join(filter(None, (summary["stage"], summary["part"])))
        print(f"{stage:<32} {summary['start_s_after_first_trace']:>7.1f} {summary['wall_ms']:>9.1f} "
              f"{summary['gpu_busy_ms']:>11.1f} {summary['gpu_busy_fraction']:>6.1%} "
              f"{summary['gpu_idle_gaps']['total_ms']:>11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("traces", nargs="+", type=Path, help="PyTorch profiler Chrome traces (*.json.gz)")
    parser.add_argument("--out", required=True, type=Path, help="the result file (JSON)")
    parser.add_argument("--command", help="the command that produced the traces, stored with the summary")
    args = parser.parse_args()
    # one clock for all of a run's traces: in the order they were recorded, each with its start after the first's
    summaries = sorted((summarize(path) for path in args.traces), key=lambda summary: summary["trace_start_us"])
    for summary in summaries:
        summary["start_s_after_first_trace"] = round((summary["trace_start_us"] - summaries[0]["trace_start_us"])
                                                     / 1e6, 3)
    result = {"bench": "trace_summary", "command": args.command,
              "summarized_by": shlex.join(["python", "bench/trace_summary.py", *sys.argv[1:]]),
              "gpu_categories": list(GPU_CATEGORIES), "idle_gap_ms": IDLE_GAP_MS, "traces": summaries}
    print_table(summaries)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
