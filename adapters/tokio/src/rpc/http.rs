//! RPC over HTTP (in progress).
