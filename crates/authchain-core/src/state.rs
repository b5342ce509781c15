//! The state the steps of one chain run share.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use smallvec::SmallVec;

/// JSON values by name, written by one step and read by the later ones
/// (Gloo's `State` map): `state.jwt` holds a token's claims, an `opaAuth`
/// policy sees the whole map as `input.state`.
///
/// Values are shared, not copied: a step that writes the same value on
/// every request (an API key's metadata, say) keeps it in an
/// `Arc<Value>` and [`insert`](Self::insert)s a clone of the `Arc`, and a
/// cached decision hands its state to the next request the same way. Names
/// are usually `&'static str` and then cost nothing either.
///
/// ```
/// use authchain_core::State;
/// use serde_json::json;
///
/// let mut state = State::new();
/// state.insert("jwt", json!({"sub": "alice"}));
/// assert_eq!(state.get("jwt").and_then(|c| c.get("sub")), Some(&json!("alice")));
/// assert_eq!(state["jwt"]["sub"], "alice");
/// assert_eq!(state.to_json(), json!({"jwt": {"sub": "alice"}}));
/// ```
///
/// Its `Debug` output names the values it holds, never shows them: a
/// step may keep a credential there (an ID token, Gloo's
/// `api_key_value`).
///
/// A state holds a few names, so they are kept in one sorted vector, a
/// binary search per lookup. It has room for two in place: a state of one
/// or two names allocates nothing of its own.
#[derive(Clone, Default, PartialEq)]
pub struct State(SmallVec<[(Cow<'static, str>, Arc<Value>); INLINE]>);

/// How many names a [`State`] holds without allocating: most chains write
/// one or two.
const INLINE: usize = 2;

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where `name` is, or where it would go.
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(name))
    }

    /// The value under `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.get_shared(name).map(|v| &**v)
    }

    /// The shared value under `name`, to keep or hand on without copying.
    pub fn get_shared(&self, name: &str) -> Option<&Arc<Value>> {
        let i = self.find(name).ok()?;
        Some(&self.0[i].1)
    }

    /// The value under `name`, to change in place (copied first if it is
    /// shared).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        let i = self.find(name).ok()?;
        Some(Arc::make_mut(&mut self.0[i].1))
    }

    /// Sets `name` to `value` (a [`Value`] or an `Arc<Value>`); returns
    /// the value it replaces.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Arc<Value>>,
    ) -> Option<Arc<Value>> {
        let name = name.into();
        match self.find(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value.into())),
            Err(i) => {
                self.0.insert(i, (name, value.into()));
                None
            }
        }
    }

    /// Removes `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Value>> {
        let i = self.find(name).ok()?;
        Some(self.0.remove(i).1)
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// How many names are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no name is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The names and values, by name.
    pub fn iter(&self) -> Iter<'_> {
        Iter(self.0.iter())
    }

    /// A copy as one JSON object (what a passthrough sends, what a Rego
    /// policy reads).
    pub fn to_json(&self) -> Value {
        Value::Object(self.into())
    }

    /// Takes in `returned`, the state a remote server answered after it
    /// was sent this one (Gloo's passthroughs send the whole state back):
    /// its new names are added, and a name this state holds keeps its
    /// value, which must come back as it went (numbers compared as
    /// numbers: a server that reads them as floats sends `5.0` for `5`,
    /// and a number past 2^53 rounded). `Err`, with nothing taken in: the
    /// first name whose value it changes, which a later step would judge.
    pub fn take_returned(&mut self, returned: Map<String, Value>) -> Result<(), String> {
        if let Some(name) = returned
            .iter()
            .find(|(name, value)| self.get(name).is_some_and(|held| !same_value(held, value)))
            .map(|(name, _)| name)
        {
            return Err(name.clone());
        }
        for (name, value) in returned {
            if !self.contains_key(&name) {
                self.insert(name, value);
            }
        }
        Ok(())
    }
}

/// Whether `returned` is `held` as a server that reads JSON numbers as
/// floats sends it back.
fn same_value(held: &Value, returned: &Value) -> bool {
    match (held, returned) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => held == returned,
    }
}

/// The names and values of a [`State`], by name.
#[derive(Debug, Clone)]
pub struct Iter<'a>(std::slice::Iter<'a, (Cow<'static, str>, Arc<Value>)>);

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (&**k, &**v))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a State {
    type Item = (&'a str, &'a Value);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// What stands for a value left out.
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(name, _)| (name, Redacted)))
            .finish()
    }
}

impl std::ops::Index<&str> for State {
    type Output = Value;

    /// The value under `name`, or `null` when it is not set (like
    /// indexing a [`Value`]).
    fn index(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        self.get(name).unwrap_or(&NULL)
    }
}

impl<K, V> Extend<(K, V)> for State
where
    K: Into<Cow<'static, str>>,
    V: Into<Arc<Value>>,
{
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K, V> FromIterator<(K, V)> for State
where
    K: Into<Cow<'static, str>>,
    V: Into<Arc<Value>>,
{
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut state = State::new();
        state.extend(iter);
        state
    }
}

impl From<Map<String, Value>> for State {
    fn from(map: Map<String, Value>) -> Self {
        map.into_iter().collect()
    }
}

impl From<&State> for Map<String, Value> {
    fn from(state: &State) -> Self {
        state
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(State::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_shared_value_is_not_copied_and_changes_only_its_copy() {
        let shared = Arc::new(json!({"plan": "gold"}));
        let mut state = State::new();
        state.insert("apiKey", shared.clone());
        assert!(Arc::ptr_eq(state.get_shared("apiKey").unwrap(), &shared));
        state.get_mut("apiKey").unwrap()["plan"] = json!("silver");
        assert_eq!(*shared, json!({"plan": "gold"}));
        assert_eq!(state["apiKey"]["plan"], "silver");
        assert_eq!(state["absent"], Value::Null);
    }

    #[test]
    fn names_stay_sorted_and_unique_whatever_the_order_of_writes() {
        let mut state = State::new();
        for name in ["m", "c", "x", "a", "c"] {
            state.insert(name, json!(name));
        }
        assert_eq!(state.insert("x", json!(1)), Some(Arc::new(json!("x"))));
        let names: Vec<&str> = state.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "c", "m", "x"]);
        assert_eq!(state["x"], 1);
        assert_eq!(state.remove("c"), Some(Arc::new(json!("c"))));
        assert_eq!(state.remove("c"), None);
        assert!(!state.contains_key("c") && state.contains_key("m"));
        assert_eq!(state.len(), 3);
        let copy: State = state
            .iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        assert_eq!(copy, state);
    }

    #[test]
    fn two_names_fit_in_place_and_a_third_moves_them_out() {
        let mut state = State::new();
        state.insert("b", json!(2));
        state.insert("a", json!(1));
        assert!(
            !state.0.spilled(),
            "two names allocate no room of their own"
        );
        state.insert("c", json!(3));
        assert!(state.0.spilled());
        let names: Vec<&str> = state.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["a", "b", "c"]);
        state.clear();
        assert!(state.is_empty());
    }

    #[test]
    fn converts_to_and_from_json() {
        let state: State = serde_json::from_str(r#"{"b": [1], "a": {"x": null}}"#).unwrap();
        assert_eq!(state.len(), 2);
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            r#"{"a":{"x":null},"b":[1]}"#
        );
        assert_eq!(state.to_json(), json!({"a": {"x": null}, "b": [1]}));
        assert_eq!(
            format!("{state:?}"),
            r#"{"a": <redacted>, "b": <redacted>}"#
        );
        assert!(serde_json::from_str::<State>("[1]").is_err());
    }

    #[test]
    fn a_returned_state_adds_names_and_keeps_the_held_ones() {
        let mut state = State::new();
        state.insert("n", json!(9_007_199_254_740_993u64));
        state.insert("jwt", json!({"sub": "alice", "n": 5}));
        let returned = |v: Value| v.as_object().unwrap().clone();
        // Sent back as a float reads it: kept as it was, the new name added.
        let echo = returned(json!({
            "n": 9_007_199_254_740_992.0,
            "jwt": {"sub": "alice", "n": 5.0},
            "new": true,
        }));
        assert_eq!(state.take_returned(echo), Ok(()));
        assert_eq!(state["n"], json!(9_007_199_254_740_993u64));
        assert_eq!(state["jwt"]["n"], json!(5));
        assert_eq!(state["new"], json!(true));
        // A held name changed: refused, nothing taken in.
        let changed = returned(json!({"jwt": {"sub": "admin", "n": 5}, "other": 1}));
        assert_eq!(state.take_returned(changed), Err("jwt".to_owned()));
        assert_eq!(state["jwt"]["sub"], "alice");
        assert!(!state.contains_key("other"));
    }
}
