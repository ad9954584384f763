//! The SQL connection under the store, on either engine: SQLite (embedded, the default) or
//! PostgreSQL (several instances sharing one store).
//!
//! The store's queries are written once, in the SQL both engines share, with SQLite's
//! placeholders (`?1`, `?`). On PostgreSQL they are rewritten to `$1` before being prepared,
//! and the few things the dialects spell differently (JSON access, last ids, row order) come
//! from [`Engine`]'s helpers. Values cross as [`Param`] and come back as [`Row`]s of [`Val`],
//! converted to whatever type the server inferred, so a query need not cast its parameters.
//!
//! Transactions are write transactions that serialise writers: SQLite's `BEGIN IMMEDIATE`;
//! on PostgreSQL a transaction-scoped advisory lock taken first ([`WRITER_LOCK`]), so every
//! read-then-write the store does sees what the previous writer committed, on both engines,
//! across every process that shares the store. [`Db::concurrent_transaction`] skips that lock
//! for the few statements written to be safe among concurrent writers (row claims with
//! `FOR UPDATE SKIP LOCKED`, marks by id).
//!
//! The `postgres` client blocks on a runtime of its own, which must not run on a thread that
//! drives async tasks: called from async code, a call runs on a scoped thread of its own.

use std::borrow::Cow;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The key of the PostgreSQL advisory lock that serialises the store's write transactions.
pub const WRITER_LOCK: i64 = 0x636f_756e_6369_6c62; // "councilb"

/// A database error, from either engine, or a value that did not fit.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no (its message and hint, not the detail, which can quote a row's
    /// values; the error is not chained again).
    #[error("{}", pg_message(.0))]
    Postgres(postgres::Error),
    /// A query that must return a row returned none.
    #[error("no row returned")]
    NoRow,
    /// A column could not be read as the type asked for.
    #[error("column {index}: {message}")]
    Column {
        /// Zero-based column.
        index: usize,
        /// What did not fit.
        message: String,
    },
}

impl DbError {
    /// Whether the error is "no row" (from either engine).
    pub fn is_no_row(&self) -> bool {
        matches!(
            self,
            DbError::NoRow | DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)
        )
    }
}

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        DbError::Postgres(e)
    }
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("PostgreSQL {}: {}", db.severity(), db.message());
            // Not the detail: it can quote a row's values ("Failing row contains ...").
            if let Some(hint) = db.hint() {
                m.push_str(" (");
                m.push_str(hint);
                m.push(')');
            }
            m
        }
        None => format!("PostgreSQL: {e}"),
    }
}

/// Result of database calls.
pub type DbResult<T> = std::result::Result<T, DbError>;

/// Which engine a store runs on; its methods spell what the dialects spell differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Engine {
    /// The text at `path` (keys joined by `.`, e.g. `as_at.date`) of the JSON text in `expr`
    /// (NULL when absent).
    pub fn json_text(self, expr: &str, path: &str) -> String {
        match self {
            Engine::Sqlite => {
                let path: String = path.split('.').map(|k| format!(".\"{k}\"")).collect();
                format!("json_extract({expr}, '${path}')")
            }
            Engine::Postgres => {
                format!("(({expr})::jsonb #>> '{{{}}}')", path.replace('.', ","))
            }
        }
    }

    /// A `FROM` item over the elements of the JSON array text in `expr`, named `alias`, whose
    /// elements are `alias.value` (use [`Engine::json_text`] on it for a member).
    pub fn json_each(self, expr: &str, alias: &str) -> String {
        match self {
            Engine::Sqlite => format!("json_each({expr}) {alias}"),
            Engine::Postgres => format!("jsonb_array_elements(({expr})::jsonb) AS {alias}(value)"),
        }
    }

    /// A subquery of the integers in the JSON array parameter `param` (`?1`): `id IN (...)`.
    pub fn json_ids(self, param: &str) -> String {
        match self {
            Engine::Sqlite => format!("SELECT value FROM json_each({param})"),
            Engine::Postgres => {
                format!("SELECT jsonb_array_elements_text(({param})::jsonb)::bigint")
            }
        }
    }

    /// The JSON object text `expr` with top-level `key` set to the string `value_expr`.
    pub fn json_set_text(self, expr: &str, key: &str, value_expr: &str) -> String {
        match self {
            Engine::Sqlite => format!("json_set({expr}, '$.\"{key}\"', {value_expr})"),
            Engine::Postgres => format!(
                "jsonb_set(({expr})::jsonb, '{{{key}}}', to_jsonb(({value_expr})::text))::text"
            ),
        }
    }

    /// JSON text of an object built from `key, value` expression pairs.
    pub fn json_object(self, pairs: &str) -> String {
        match self {
            Engine::Sqlite => format!("json_object({pairs})"),
            Engine::Postgres => format!("jsonb_build_object({pairs})::text"),
        }
    }

    /// JSON text of an array of one JSON object built from `key, value` pairs (cast each
    /// parameter, `CAST(?2 AS TEXT)`: PostgreSQL cannot infer a type there).
    pub fn json_array_of_object(self, pairs: &str) -> String {
        match self {
            Engine::Sqlite => format!("json_array(json_object({pairs}))"),
            Engine::Postgres => format!("jsonb_build_array(jsonb_build_object({pairs}))::text"),
        }
    }

    /// Whether `needle` occurs in `haystack` (both expressions), ignoring ASCII case.
    pub fn contains_ci(self, haystack: &str, needle: &str) -> String {
        match self {
            Engine::Sqlite => format!("instr(lower({haystack}), lower({needle})) > 0"),
            Engine::Postgres => format!("strpos(lower({haystack}), lower({needle})) > 0"),
        }
    }

    /// The clause that ends a `SELECT` whose rows a concurrent transaction claims: PostgreSQL
    /// locks them and skips rows another transaction has locked (`FOR UPDATE SKIP LOCKED`);
    /// nothing on SQLite, whose write transactions run one at a time.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// A statement that sets the identity sequence of `table.column` past the largest value
    /// the column holds (after rows were inserted with their ids); `None` on SQLite, whose
    /// ids continue from the largest by themselves.
    pub fn reset_identity(self, table: &str, column: &str) -> Option<String> {
        match self {
            Engine::Sqlite => None,
            Engine::Postgres => Some(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            )),
        }
    }

    /// The column that orders a table's rows by insertion where it has no integer id
    /// (`batches`, `runs`): SQLite's `rowid`, a `seq` identity column on PostgreSQL.
    pub fn insertion_order(self) -> &'static str {
        match self {
            Engine::Sqlite => "rowid",
            Engine::Postgres => "seq",
        }
    }
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param<'a> {
    /// SQL NULL.
    Null,
    /// An integer (booleans are 0 and 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Blob(Cow<'a, [u8]>),
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl From<$t> for Param<'_> {
            fn from(v: $t) -> Self {
                Param::Int(v as i64)
            }
        }
        impl From<&$t> for Param<'_> {
            fn from(v: &$t) -> Self {
                Param::Int(*v as i64)
            }
        }
    )*};
}
int_param!(i64, i32, u32, u64, usize, u16, u8, i16);

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Int(v as i64)
    }
}
impl From<&bool> for Param<'_> {
    fn from(v: &bool) -> Self {
        Param::Int(*v as i64)
    }
}
impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&&'a str> for Param<'a> {
    fn from(v: &&'a str) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&&'a String> for Param<'a> {
    fn from(v: &&'a String) -> Self {
        Param::Text(Cow::Borrowed(v.as_str()))
    }
}
impl<'a> From<&&'a [u8]> for Param<'a> {
    fn from(v: &&'a [u8]) -> Self {
        Param::Blob(Cow::Borrowed(v))
    }
}
impl From<&f64> for Param<'_> {
    fn from(v: &f64) -> Self {
        Param::Real(*v)
    }
}
impl<'a> From<&Param<'a>> for Param<'a> {
    fn from(v: &Param<'a>) -> Self {
        v.clone()
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Cow::Borrowed(v))
    }
}
impl From<String> for Param<'_> {
    fn from(v: String) -> Self {
        Param::Text(Cow::Owned(v))
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Blob(Cow::Borrowed(v))
    }
}
impl From<Vec<u8>> for Param<'_> {
    fn from(v: Vec<u8>) -> Self {
        Param::Blob(Cow::Owned(v))
    }
}
macro_rules! option_param {
    ($($t:ty),*) => {$(
        impl<'a> From<&'a Option<$t>> for Param<'a> {
            fn from(v: &'a Option<$t>) -> Self {
                v.as_ref().map_or(Param::Null, Param::from)
            }
        }
        impl<'a> From<&Option<&'a $t>> for Param<'a> {
            fn from(v: &Option<&'a $t>) -> Self {
                v.map_or(Param::Null, Param::from)
            }
        }
    )*};
}
option_param!(String, Vec<u8>, i64, i32, u32, u64, usize, bool, f64);

impl<'a> From<&Option<&'a str>> for Param<'a> {
    fn from(v: &Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::from)
    }
}
impl<'a> From<&Option<&'a [u8]>> for Param<'a> {
    fn from(v: &Option<&'a [u8]>) -> Self {
        v.map_or(Param::Null, Param::from)
    }
}
impl<'a> From<Option<String>> for Param<'a> {
    fn from(v: Option<String>) -> Self {
        v.map_or(Param::Null, Param::from)
    }
}

/// The parameters of a statement: `p![a, b, c]` (each borrowed, as in `rusqlite::params!`,
/// and converted with `Param::from`).
macro_rules! p {
    ($($x:expr),* $(,)?) => {
        &[$($crate::store::db::Param::from(&$x)),*] as &[$crate::store::db::Param<'_>]
    };
}
pub(crate) use p;

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Param::Null => ValueRef::Null,
            Param::Int(i) => ValueRef::Integer(*i),
            Param::Real(f) => ValueRef::Real(*f),
            Param::Text(s) => ValueRef::Text(s.as_bytes()),
            Param::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn conversion(what: &str, ty: &Type) -> Box<dyn std::error::Error + Sync + Send> {
    format!("cannot bind {what} to a parameter of type {ty}").into()
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => return Ok(IsNull::Yes),
            Param::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out)?,
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out)?,
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out)?,
                Type::FLOAT8 => (*i as f64).to_sql(ty, out)?,
                Type::BOOL => (*i != 0).to_sql(ty, out)?,
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(&Type::TEXT, out)?
                }
                _ => return Err(conversion("an integer", ty)),
            },
            Param::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out)?,
                Type::FLOAT4 => (*f as f32).to_sql(ty, out)?,
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => {
                    f.to_string().as_str().to_sql(&Type::TEXT, out)?
                }
                _ => return Err(conversion("a number", ty)),
            },
            Param::Text(s) => match *ty {
                Type::INT8 => s.trim().parse::<i64>()?.to_sql(ty, out)?,
                Type::INT4 => s.trim().parse::<i32>()?.to_sql(ty, out)?,
                Type::INT2 => s.trim().parse::<i16>()?.to_sql(ty, out)?,
                Type::FLOAT8 => s.trim().parse::<f64>()?.to_sql(ty, out)?,
                Type::BYTEA => s.as_bytes().to_sql(ty, out)?,
                Type::JSONB => {
                    out.extend_from_slice(&[1]);
                    out.extend_from_slice(s.as_bytes());
                    IsNull::No
                }
                _ => {
                    out.extend_from_slice(s.as_bytes());
                    IsNull::No
                }
            },
            Param::Blob(b) => match *ty {
                Type::BYTEA => b.as_ref().to_sql(ty, out)?,
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN | Type::JSON => {
                    std::str::from_utf8(b)?.to_sql(&Type::TEXT, out)?
                }
                _ => return Err(conversion("bytes", ty)),
            },
        };
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// An integer (PostgreSQL booleans read as 0 and 1).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl<'a> postgres::types::FromSql<'a> for Val {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::BOOL => Val::Int(bool::from_sql(ty, raw)? as i64),
            Type::INT2 => Val::Int(i16::from_sql(ty, raw)? as i64),
            Type::INT4 => Val::Int(i32::from_sql(ty, raw)? as i64),
            Type::INT8 => Val::Int(i64::from_sql(ty, raw)?),
            Type::OID => Val::Int(u32::from_sql(ty, raw)? as i64),
            Type::FLOAT4 => Val::Real(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => Val::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => Val::Blob(raw.to_vec()),
            Type::JSONB => Val::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.into()),
            _ => Val::Text(std::str::from_utf8(raw)?.to_string()),
        })
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Val::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// PostgreSQL's binary NUMERIC (what `SUM` of integers returns): an integer when it has no
/// fraction, else a float.
fn numeric(raw: &[u8]) -> std::result::Result<Val, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<i64, Box<dyn std::error::Error + Sync + Send>> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("short NUMERIC")?;
        Ok(i16::from_be_bytes([b[0], b[1]]) as i64)
    };
    let (ndigits, weight, sign, dscale) = (word(0)?, word(1)?, word(2)? as u16, word(3)?);
    if sign == 0xC000 {
        return Ok(Val::Real(f64::NAN));
    }
    let mut int: i128 = 0;
    let mut float = 0f64;
    for i in 0..ndigits {
        let d = word(4 + i as usize)?;
        let power = weight - i;
        float += d as f64 * 10000f64.powi(power as i32);
        if power >= 0 {
            int = int * 10000 + d as i128;
        }
    }
    let negative = sign == 0x4000;
    let _ = dscale; // the digits say whether there is a fraction
    if ndigits > weight + 1 {
        return Ok(Val::Real(if negative { -float } else { float }));
    }
    for _ in ndigits..weight + 1 {
        int *= 10000;
    }
    let int = if negative { -int } else { int };
    Ok(i64::try_from(int).map_or(Val::Real(int as f64), Val::Int))
}

impl Val {
    /// The value as a parameter (bytes stay bytes).
    pub fn as_param(&self) -> Param<'_> {
        match self {
            Val::Null => Param::Null,
            Val::Int(i) => Param::Int(*i),
            Val::Real(f) => Param::Real(*f),
            Val::Text(s) => Param::Text(Cow::Borrowed(s)),
            Val::Blob(b) => Param::Blob(Cow::Borrowed(b)),
        }
    }
}

/// One row of a result, read whole.
#[derive(Debug, Clone)]
pub struct Row(Vec<Val>);

impl Row {
    /// Column `index` (from 0) as a `T`.
    pub fn get<T: FromVal>(&self, index: usize) -> DbResult<T> {
        let v = self.0.get(index).ok_or_else(|| DbError::Column {
            index,
            message: "no such column".into(),
        })?;
        T::from_val(v).map_err(|message| DbError::Column { index, message })
    }

    /// Column `index` as a `T`, moved out of the row (text and bytes are not copied); the
    /// column reads as NULL afterwards.
    pub fn take<T: FromVal>(&mut self, index: usize) -> DbResult<T> {
        let v = self.0.get_mut(index).ok_or_else(|| DbError::Column {
            index,
            message: "no such column".into(),
        })?;
        let v = std::mem::replace(v, Val::Null);
        T::from_owned(v).map_err(|message| DbError::Column { index, message })
    }

    /// Every value, in column order.
    pub fn values(&self) -> &[Val] {
        &self.0
    }

    /// The raw value of column `index`.
    pub fn val(&self, index: usize) -> Option<&Val> {
        self.0.get(index)
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A Rust type a column can be read as.
pub trait FromVal: Sized {
    /// Converts, or says why not.
    fn from_val(v: &Val) -> std::result::Result<Self, String>;

    /// Converts an owned value (text and bytes moved, not copied, where the type allows).
    fn from_owned(v: Val) -> std::result::Result<Self, String> {
        Self::from_val(&v)
    }
}

fn mismatch(v: &Val, want: &str) -> String {
    let got = match v {
        Val::Null => "NULL",
        Val::Int(_) => "an integer",
        Val::Real(_) => "a number",
        Val::Text(_) => "text",
        Val::Blob(_) => "bytes",
    };
    format!("{got} where {want} was expected")
}

impl FromVal for i64 {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Int(i) => Ok(*i),
            Val::Real(f) if f.fract() == 0.0 => Ok(*f as i64),
            Val::Text(s) => s.trim().parse().map_err(|_| mismatch(v, "an integer")),
            _ => Err(mismatch(v, "an integer")),
        }
    }
}

macro_rules! int_val {
    ($($t:ty),*) => {$(
        impl FromVal for $t {
            fn from_val(v: &Val) -> std::result::Result<Self, String> {
                let i = i64::from_val(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )*};
}
int_val!(i32, u32, u64, usize, u16, u8);

impl FromVal for bool {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        Ok(i64::from_val(v)? != 0)
    }
}

impl FromVal for f64 {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Int(i) => Ok(*i as f64),
            Val::Real(f) => Ok(*f),
            _ => Err(mismatch(v, "a number")),
        }
    }
}

impl FromVal for String {
    fn from_owned(v: Val) -> std::result::Result<Self, String> {
        match v {
            Val::Text(s) => Ok(s),
            v => Self::from_val(&v),
        }
    }

    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Text(s) => Ok(s.clone()),
            Val::Int(i) => Ok(i.to_string()),
            Val::Real(f) => Ok(f.to_string()),
            Val::Blob(b) => String::from_utf8(b.clone()).map_err(|_| mismatch(v, "text")),
            Val::Null => Err(mismatch(v, "text")),
        }
    }
}

impl FromVal for Vec<u8> {
    fn from_owned(v: Val) -> std::result::Result<Self, String> {
        match v {
            Val::Blob(b) => Ok(b),
            Val::Text(s) => Ok(s.into_bytes()),
            v => Self::from_val(&v),
        }
    }

    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Blob(b) => Ok(b.clone()),
            Val::Text(s) => Ok(s.as_bytes().to_vec()),
            _ => Err(mismatch(v, "bytes")),
        }
    }
}

impl FromVal for serde_json::Value {
    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Null => Ok(serde_json::Value::Null),
            Val::Text(s) => serde_json::from_str(s).map_err(|e| format!("not JSON: {e}")),
            Val::Blob(b) => serde_json::from_slice(b).map_err(|e| format!("not JSON: {e}")),
            Val::Int(i) => Ok((*i).into()),
            Val::Real(f) => Ok(serde_json::json!(f)),
        }
    }
}

impl<T: FromVal> FromVal for Option<T> {
    fn from_owned(v: Val) -> std::result::Result<Self, String> {
        match v {
            Val::Null => Ok(None),
            v => T::from_owned(v).map(Some),
        }
    }

    fn from_val(v: &Val) -> std::result::Result<Self, String> {
        match v {
            Val::Null => Ok(None),
            v => T::from_val(v).map(Some),
        }
    }
}

/// Rewrites SQLite placeholders (`?1`, `?`) as PostgreSQL's (`$1`), leaving quoted text alone.
/// A bare `?` takes the number after the largest one seen so far, as SQLite numbers it.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut largest = 0u32;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                out.push(c);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// A PostgreSQL connection and the statements it has prepared.
pub struct Pg {
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
}

impl Pg {
    fn client(&mut self) -> &mut postgres::Client {
        self.client
            .as_mut()
            .expect("the PostgreSQL client is open until drop")
    }

    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let translated = to_postgres(sql);
        let s = self.client().prepare(&translated)?;
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Closing blocks on the client's own runtime: off any async thread.
        if let Some(client) = self.client.take() {
            off_async(move || drop(client));
        }
    }
}

/// Runs `f` where the `postgres` client may block: here, or on a scoped thread when this
/// thread drives async tasks.
pub fn off_async<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// An open connection.
pub enum Db {
    /// Embedded SQLite.
    Sqlite(rusqlite::Connection),
    /// PostgreSQL.
    Postgres(Box<Pg>),
}

fn pg_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn sqlite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut vals = Vec::with_capacity(n);
    for i in 0..n {
        vals.push(match r.get_ref(i)? {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(i) => Val::Int(i),
            ValueRef::Real(f) => Val::Real(f),
            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Val::Blob(b.to_vec()),
        });
    }
    Ok(Row(vals))
}

fn pg_row(r: &postgres::Row) -> DbResult<Row> {
    let mut vals = Vec::with_capacity(r.len());
    for i in 0..r.len() {
        vals.push(r.try_get::<usize, Val>(i)?);
    }
    Ok(Row(vals))
}

impl Db {
    /// Opens SQLite at `path` (WAL, foreign keys, a busy timeout).
    pub fn open_sqlite(path: &std::path::Path) -> DbResult<Db> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.set_prepared_statement_cache_capacity(64);
        // A commit checkpoints the log itself only past 16 MB (SQLite's default is 4 MB): a
        // file's chunk writer leaves checkpoints to a `WalCheckpointer` beside it, and this is
        // the backstop when that falls behind (41,000 → 49,000 records/s file → store).
        conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
        // 8 MiB of page cache (SQLite's default is 2 MB): a chunk of 1,000 outbox rows dirties
        // up to ~6 MB of pages (the rows, and the message id index's leaves, which random ids
        // touch all over); with less, SQLite spills dirty pages into the log mid-transaction
        // and writes them again at commit: 1.4 GB written for 100,000 records, against 0.65.
        conn.pragma_update(None, "cache_size", -8192)?;
        Ok(Db::Sqlite(conn))
    }

    /// Copies what the write-ahead log holds into the database file as far as no reader
    /// needs it, without waiting for or blocking anyone (SQLite's passive checkpoint); nothing
    /// to do on PostgreSQL.
    pub fn wal_checkpoint_passive(&mut self) -> DbResult<()> {
        if let Db::Sqlite(conn) = self {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    /// Connects to PostgreSQL at `url` (`postgres://user@host:port/db`; no TLS: use a local
    /// socket, a private network or a tunnel).
    pub fn open_postgres(url: &str) -> DbResult<Db> {
        let client = off_async(|| postgres::Client::connect(url, postgres::NoTls))?;
        Ok(Db::Postgres(Box::new(Pg {
            client: Some(client),
            statements: HashMap::new(),
        })))
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        match self {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> DbResult<u64> {
        match self {
            Db::Sqlite(c) => {
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params))? as u64)
            }
            Db::Postgres(pg) => {
                let st = pg.statement(sql)?;
                Ok(pg.client().execute(&st, &pg_params(params))?)
            }
        }
    }

    /// Runs a query and reads every row.
    pub fn query(&mut self, sql: &str, params: &[Param<'_>]) -> DbResult<Vec<Row>> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(params), |r| sqlite_row(r, n))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            }
            Db::Postgres(pg) => {
                let st = pg.statement(sql)?;
                pg.client()
                    .query(&st, &pg_params(params))?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    }

    /// Runs a query and converts each row with `f`.
    pub fn query_map<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnMut(&Row) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row, converted with `f`, or `None`.
    pub fn query_opt<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        match self.query(sql, params)?.first() {
            Some(r) => f(r).map(Some),
            None => Ok(None),
        }
    }

    /// The first row, converted with `f`; [`DbError::NoRow`] when there is none.
    pub fn query_row<T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&Row) -> DbResult<T>,
    ) -> DbResult<T> {
        self.query_opt(sql, params, f)?.ok_or(DbError::NoRow)
    }

    /// Column 0 of the first row.
    pub fn query_value<T: FromVal>(&mut self, sql: &str, params: &[Param<'_>]) -> DbResult<T> {
        self.query_row(sql, params, |r| r.get(0))
    }

    /// The names of `table`'s columns, in their order.
    pub fn columns(&mut self, table: &str) -> DbResult<Vec<String>> {
        match self.engine() {
            Engine::Sqlite => self.query_map(
                "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
                &[Param::from(table)],
                |r| r.get(0),
            ),
            Engine::Postgres => self.query_map(
                "SELECT CAST(column_name AS TEXT) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
                &[Param::from(table)],
                |r| r.get(0),
            ),
        }
    }

    /// Runs several statements with no parameters (a migration).
    pub fn execute_batch(&mut self, sql: &str) -> DbResult<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Postgres(pg) => Ok(pg.client().batch_execute(sql)?),
        }
    }

    /// Runs `f` inside a savepoint: kept when it returns `Ok(true)`, undone otherwise.
    pub fn savepoint(&mut self, f: impl FnOnce(&mut Db) -> DbResult<bool>) -> DbResult<bool> {
        self.execute_batch("SAVEPOINT step")?;
        let result = f(self);
        if !matches!(result, Ok(true)) {
            self.execute_batch("ROLLBACK TO step")?;
        }
        self.execute_batch("RELEASE step")?;
        result
    }

    /// Begins a write transaction that serialises with every other writer of the store (see
    /// the module's documentation). Rolled back when dropped without [`Tx::commit`].
    pub fn transaction(&mut self) -> DbResult<Tx<'_>> {
        match self {
            Db::Sqlite(c) => c.execute_batch("BEGIN IMMEDIATE")?,
            Db::Postgres(pg) => {
                pg.client().batch_execute("BEGIN")?;
                pg.client()
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
            }
        }
        Ok(Tx {
            db: self,
            done: false,
        })
    }

    /// Begins a transaction that does not wait for other writers on PostgreSQL (on SQLite it
    /// is [`Db::transaction`]): only for statements safe among concurrent writers.
    pub fn concurrent_transaction(&mut self) -> DbResult<Tx<'_>> {
        match self {
            Db::Sqlite(_) => self.transaction(),
            Db::Postgres(pg) => {
                pg.client().batch_execute("BEGIN")?;
                Ok(Tx {
                    db: self,
                    done: false,
                })
            }
        }
    }
}

/// A transaction: a [`Db`] (through `Deref`) that commits on [`Tx::commit`] and rolls back
/// otherwise.
pub struct Tx<'a> {
    db: &'a mut Db,
    done: bool,
}

impl Tx<'_> {
    /// Commits.
    pub fn commit(mut self) -> DbResult<()> {
        self.done = true;
        self.db.execute_batch("COMMIT")
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.execute_batch("ROLLBACK");
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        self.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT '?', x FROM t WHERE a = ?2 AND b = ? AND c = ?1 AND d = \"?\""),
            "SELECT '?', x FROM t WHERE a = $2 AND b = $3 AND c = $1 AND d = \"?\""
        );
        assert_eq!(to_postgres("a = ? OR b = ?"), "a = $1 OR b = $2");
    }

    #[test]
    fn numeric_reads_as_an_integer_or_a_float() {
        // 12345678 = [1234, 5678], weight 1.
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(numeric(&raw).unwrap(), Val::Int(12_345_678));
        // 0: no digits.
        assert_eq!(numeric(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), Val::Int(0));
        // 20000 = [2], weight 1.
        assert_eq!(
            numeric(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 2]).unwrap(),
            Val::Int(20_000)
        );
        // -1.5 = [1, 5000], weight 0, sign negative, dscale 1.
        assert_eq!(
            numeric(&[0, 2, 0, 0, 0x40, 0, 0, 1, 0, 1, 0x13, 0x88]).unwrap(),
            Val::Real(-1.5)
        );
    }
}
