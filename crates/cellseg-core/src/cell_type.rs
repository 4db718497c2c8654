//! Cell types and their label indices, defined once for the whole workspace.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The three Sartorius cell types. The label index (`shsy5y=0, astro=1, cort=2`) is the seed's
/// `CELL_TYPES` order, used by every per-type list (thresholds, model subsets, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellType {
    /// SH-SY5Y neuroblastoma: many small cells with neurites.
    Shsy5y,
    /// Astrocytes: long, thin, irregular.
    Astro,
    /// Cortical neurons: few, round.
    Cort,
}

impl CellType {
    /// All types in label order.
    pub const ALL: [CellType; 3] = [CellType::Shsy5y, CellType::Astro, CellType::Cort];

    /// The label index (`shsy5y=0, astro=1, cort=2`).
    pub fn label(self) -> usize {
        self as usize
    }

    /// The type of label index `label`, if any.
    pub fn from_label(label: usize) -> Option<Self> {
        Self::ALL.get(label).copied()
    }

    /// The name used in `train.csv` (`shsy5y`, `astro`, `cort`).
    pub fn name(self) -> &'static str {
        match self {
            CellType::Shsy5y => "shsy5y",
            CellType::Astro => "astro",
            CellType::Cort => "cort",
        }
    }
}

impl fmt::Display for CellType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CellType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "shsy5y" => Ok(CellType::Shsy5y),
            "astro" | "astros" => Ok(CellType::Astro),
            "cort" => Ok(CellType::Cort),
            other => Err(Error::UnknownCellType(other.to_string())),
        }
    }
}

/// The eight LIVECell cell lines, in the seed's `LIVECELL_CLASSES` label order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LivecellClass {
    /// SK-BR-3.
    Skbr3,
    /// A172.
    A172,
    /// Huh7.
    Huh7,
    /// BV-2.
    Bv2,
    /// MCF7.
    Mcf7,
    /// BT-474.
    Bt474,
    /// SK-OV-3.
    Skov3,
    /// SH-SY5Y.
    Shsy5y,
}

impl LivecellClass {
    /// All classes in label order.
    pub const ALL: [LivecellClass; 8] = [
        LivecellClass::Skbr3,
        LivecellClass::A172,
        LivecellClass::Huh7,
        LivecellClass::Bv2,
        LivecellClass::Mcf7,
        LivecellClass::Bt474,
        LivecellClass::Skov3,
        LivecellClass::Shsy5y,
    ];

    /// The label index (0–7).
    pub fn label(self) -> usize {
        self as usize
    }

    /// Lower-case name (`skbr3`, …).
    pub fn name(self) -> &'static str {
        match self {
            LivecellClass::Skbr3 => "skbr3",
            LivecellClass::A172 => "a172",
            LivecellClass::Huh7 => "huh7",
            LivecellClass::Bv2 => "bv2",
            LivecellClass::Mcf7 => "mcf7",
            LivecellClass::Bt474 => "bt474",
            LivecellClass::Skov3 => "skov3",
            LivecellClass::Shsy5y => "shsy5y",
        }
    }

    /// The image folder name in the LIVECell release (`SkBr3`, `A172`, …).
    pub fn folder(self) -> &'static str {
        match self {
            LivecellClass::Skbr3 => "SkBr3",
            LivecellClass::A172 => "A172",
            LivecellClass::Huh7 => "Huh7",
            LivecellClass::Bv2 => "BV2",
            LivecellClass::Mcf7 => "MCF7",
            LivecellClass::Bt474 => "BT474",
            LivecellClass::Skov3 => "SKOV3",
            LivecellClass::Shsy5y => "SHSY5Y",
        }
    }
}

impl FromStr for LivecellClass {
    type Err = Error;
    /// Case-insensitive; accepts the folder spelling (`SkBr3`) and the file-name prefix (`A172_…`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|c| c.name() == lower)
            .ok_or_else(|| Error::UnknownCellType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_seed_order() {
        assert_eq!(CellType::Shsy5y.label(), 0);
        assert_eq!(CellType::Astro.label(), 1);
        assert_eq!(CellType::Cort.label(), 2);
        assert_eq!(LivecellClass::Shsy5y.label(), 7);
        assert_eq!("SkBr3".parse::<LivecellClass>().unwrap(), LivecellClass::Skbr3);
        assert!("neuron".parse::<CellType>().is_err());
    }
}
