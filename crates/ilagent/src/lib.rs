//! ilagent
