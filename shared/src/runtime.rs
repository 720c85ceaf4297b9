//! The Tokio runtime a binary runs on, from its `threads` setting.
//!
//! One thread gives a current-thread runtime, whose tasks never wake another
//! thread: on the 2-core benchmark machine, shared with Redis and RabbitMQ,
//! about 9 % less CPU per event for the gateway and 8 % for the worker than
//! two work-stealing workers (docs/benchmarks.md). More threads, or 0 for one
//! per core, give a work-stealing runtime, for a process with cores of its own.

use tokio::runtime::{Builder, Runtime};

pub fn build(threads: usize) -> std::io::Result<Runtime> {
    let mut builder = if threads == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::build;

    #[test]
    fn one_thread_is_a_current_thread_runtime() {
        let runtime = build(1).expect("runtime");
        assert_eq!(
            runtime.handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
    }

    #[test]
    fn more_threads_or_zero_are_work_stealing() {
        let three = build(3).expect("runtime");
        assert_eq!(three.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(three.metrics().num_workers(), 3);
        let per_core = build(0).expect("runtime");
        assert_eq!(
            per_core.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert!(per_core.metrics().num_workers() >= 1);
    }
}
