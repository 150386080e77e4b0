//! Counts in messages: "1 service", "2 services", for every line an operator reads.

/// `n` and `noun`, with an "s" unless `n` is 1 ("1 service", "0 services", "3 bind errors").
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(counted(1, "service"), "1 service");
        assert_eq!(counted(0, "service"), "0 services");
        assert_eq!(counted(2, "old worker"), "2 old workers");
    }
}
