//! Integration tests of cellseg-metrics: parity with pycocotools COCOeval and with an independent
//! numpy + pycocotools competition metric, on the project's real data.

mod fixtures;
mod fuzz;
mod parity;
