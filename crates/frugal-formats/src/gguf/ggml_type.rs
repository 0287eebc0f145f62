//! The table of ggml tensor types: id, name, block size and bytes per block, as llama.cpp's
//! `ggml.h` / `ggml.c` (`type_traits`) define them. This table is the single source of truth for
//! every tensor type Frugal reads, writes, parses from the command line or reports.

/// A ggml tensor type, identified by its on-disk id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// One row of the type table.
#[derive(Debug, Clone, Copy)]
pub struct GgmlTypeInfo {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block (1 for plain types).
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

macro_rules! types {
    ($($konst:ident = $id:literal, $name:literal, $bs:literal, $ts:literal;)*) => {
        impl GgmlType { $(pub const $konst: GgmlType = GgmlType($id);)* }
        /// Every type this build knows, in id order.
        pub const GGML_TYPES: &[GgmlTypeInfo] = &[
            $(GgmlTypeInfo { id: $id, name: $name, block_size: $bs, type_size: $ts },)*
        ];
    };
}

// Ids 4, 5 (Q4_2, Q4_3) and 31–33, 36–38 (interleaved repacks) were removed from ggml and are
// rejected as unknown, as llama.cpp does.
types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
}

impl GgmlType {
    /// The table row for this type, or `None` for an id ggml does not (or no longer) define.
    pub fn info(self) -> Option<&'static GgmlTypeInfo> {
        GGML_TYPES.iter().find(|t| t.id == self.0)
    }

    /// The type's name (`"Q4_K"`), or `"type#N"` for an unknown id.
    pub fn name(self) -> String {
        self.info()
            .map_or_else(|| format!("type#{}", self.0), |t| t.name.to_string())
    }

    /// Looks a type up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GGML_TYPES
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| GgmlType(t.id))
    }

    /// Bytes that `n_elements` of this type take, or `None` when the count is not a whole number
    /// of blocks, the type is unknown, or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let t = self.info()?;
        if !n_elements.is_multiple_of(t.block_size) {
            return None;
        }
        (n_elements / t.block_size).checked_mul(t.type_size)
    }

    /// Bits per weight of the format itself (e.g. 4.5 for Q4_0).
    pub fn bits_per_weight(self) -> Option<f64> {
        self.info()
            .map(|t| t.type_size as f64 * 8.0 / t.block_size as f64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_unique_and_sorted() {
        for w in GGML_TYPES.windows(2) {
            assert!(w[0].id < w[1].id, "{} before {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn known_bits_per_weight() {
        // Figures llama.cpp prints in its quantize help.
        let check = |t: GgmlType, bpw: f64| assert_eq!(t.bits_per_weight(), Some(bpw), "{t}");
        check(GgmlType::Q4_0, 4.5);
        check(GgmlType::Q4_1, 5.0);
        check(GgmlType::Q8_0, 8.5);
        check(GgmlType::Q2_K, 2.625);
        check(GgmlType::Q3_K, 3.4375);
        check(GgmlType::Q4_K, 4.5);
        check(GgmlType::Q5_K, 5.5);
        check(GgmlType::Q6_K, 6.5625);
        check(GgmlType::BF16, 16.0);
    }

    #[test]
    fn bytes_for_rejects_partial_blocks() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(576), None);
        assert_eq!(GgmlType(4).bytes_for(32), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::from_name("q6_k"), Some(GgmlType::Q6_K));
    }
}
