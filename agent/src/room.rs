//! How the vectors that hold one entry per task (a node's tasks in the worker, the sim
//! runtime's table) grow and shrink: by a quarter at a time rather than by doubling, and
//! giving memory back once half of it is unused, so that a hollow agent's spare room stays
//! a fraction of what its tasks take.

/// Makes room for at least `min` more entries when `v` is full, a quarter of its length
/// when that is more.
pub(crate) fn make_room<T>(v: &mut Vec<T>, min: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(min));
    }
}

/// Gives back what `v` does not use once that is more than half of it, keeping a quarter
/// of its length spare.
pub(crate) fn give_back_room<T>(v: &mut Vec<T>) {
    let len = v.len();
    if len * 2 < v.capacity() {
        v.shrink_to(len + len / 4);
    }
}
