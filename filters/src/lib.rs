//! Remora policy layers.
