//! A real etcd process for tests (being written).
