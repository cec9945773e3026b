//! Criterion benchmarks live in `benches/`: `checkers` (events/s over a
//! 1M-event trace) and `recording` (cost of recording one trace event).
//! Run with `cargo bench -p chatbench-benches`.
