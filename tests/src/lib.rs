//! Test world helpers.
