//! Integration tests of cellseg-train (one binary: libtorch is linked once).

mod engine;
mod optim_parity;
mod toy;
