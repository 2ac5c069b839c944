//! Runtime of the trainer executable (plan loading, arena, back ends, data, checkpoints). Built in a later issue.
