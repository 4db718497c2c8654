//! Integration tests of cellseg-postproc: parity with the seed's Python post-processing.

mod fuzz;
mod parity;
mod tweak_parity;
