//! Unit tests of the task runner's compact records.

use super::*;

#[test]
fn a_parked_task_is_a_small_record() {
    // Hollow nodes hold one of these per running task; the whole runner it replaces took
    // kilobytes. Growing it is a choice to make consciously.
    assert!(
        std::mem::size_of::<Parked>() <= 224,
        "Parked grew to {} bytes",
        std::mem::size_of::<Parked>()
    );
}

#[test]
fn the_usual_stop_signal_takes_no_allocation() {
    let spec = StopSpec {
        signal: None,
        grace: Duration::from_secs(10),
    };
    assert_eq!(spec.signal(), "SIGTERM");
    let custom = StopSpec {
        signal: Some("SIGINT".into()),
        grace: Duration::from_secs(1),
    };
    assert_eq!(custom.signal(), "SIGINT");
}
