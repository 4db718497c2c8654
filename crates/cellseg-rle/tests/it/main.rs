//! Integration tests of cellseg-rle: parity with pycocotools and numpy on the project's real data.

mod fixtures;
mod parity;
