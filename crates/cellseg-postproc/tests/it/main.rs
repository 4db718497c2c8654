//! Integration tests of cellseg-postproc: parity with the seed's Python post-processing.

mod parity;
mod tweak_parity;
