//! The Flight SQL service: statements and prepared statements over the hunt catalog, the
//! metadata calls navigators make, and the Basic handshake. Every call is authorized first;
//! writes of any kind are refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::GetCatalogsBuilder;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, SESSION_TTL};
use super::metadata;
use super::query::{Executor, QueryLog};
use super::wire;

type DoGetStream = <FlightSqlServer as FlightService>::DoGetStream;

/// Prepared statements kept per user; the user's oldest goes first.
const MAX_PREPARED_PER_USER: usize = 100;
/// The longest statement taken: hunts are long, but not this long.
const MAX_SQL_BYTES: usize = 1 << 20;

struct Prepared {
    user: String,
    sql: String,
    /// Bound by the client's DoPut (ADBC binds one row of parameters).
    params: Option<Vec<ScalarValue>>,
    created: Instant,
}

pub struct FlightSqlServer {
    executor: Executor,
    auth: Arc<Authenticator>,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
}

impl FlightSqlServer {
    pub fn new(executor: Executor, auth: Arc<Authenticator>) -> FlightSqlServer {
        FlightSqlServer { executor, auth, prepared: Mutex::default() }
    }

    /// The caller's user name; a refusal is logged with the peer's address (never the token).
    fn user<T>(&self, req: &Request<T>) -> Result<String, Status> {
        self.auth.authorize(req.metadata()).inspect_err(|s| {
            let peer = req.remote_addr().map_or_else(|| "?".to_string(), |a| a.to_string());
            log::warn!(target: "crowsnest::sql", "refused a call from {peer}: {}", s.message());
        })
    }

    /// The result schema of `sql`, as sent on the wire.
    async fn schema_of(&self, user: &str, sql: &str, params: Option<&[ScalarValue]>) -> Result<SchemaRef, Status> {
        Ok(wire::schema(self.plan(user, sql, params).await?.schema().inner()))
    }

    /// Plans `sql` read-only as `user`; a refusal is logged as the query's outcome.
    async fn plan(&self, user: &str, sql: &str, params: Option<&[ScalarValue]>) -> Result<datafusion::prelude::DataFrame, Status> {
        let planned = match within_length(sql) {
            Ok(()) => self.executor.plan(sql, params).await,
            Err(s) => Err(s),
        };
        planned.inspect_err(|s| QueryLog::start(user, sql).finish(0, 0, &Err(s.clone())))
    }

    async fn run(&self, user: &str, sql: &str, params: Option<Vec<ScalarValue>>) -> Result<Response<DoGetStream>, Status> {
        within_length(sql)?;
        let (schema, rows) = self.executor.execute(user, sql, params).await?;
        let wire_schema = wire::schema(&schema);
        let rows = rows.map(move |r| r.and_then(|b| wire::batch(&b).map_err(|e| Status::internal(e.to_string()))));
        Ok(stream_of(wire_schema, rows))
    }

    /// The FlightInfo of a metadata command: its one ticket is the command itself.
    fn command_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: SchemaRef,
        command: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        info(&schema, command.as_any().encode_to_vec(), request.into_inner())
    }

    fn with_prepared<R>(&self, user: &str, handle: &[u8], f: impl FnOnce(&mut Prepared) -> R) -> Result<R, Status> {
        let mut map = self.prepared.lock().expect("prepared lock");
        match map.get_mut(handle) {
            Some(p) if p.user == user => Ok(f(p)),
            _ => Err(Status::not_found("no such prepared statement (closed, expired, or another user's)")),
        }
    }
}

/// A FlightInfo whose one endpoint's ticket is `ticket`, answered on this connection.
fn info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new().try_with_schema(schema).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(info.with_endpoint(endpoint).with_descriptor(descriptor)))
}

fn stream_of(schema: SchemaRef, rows: impl Stream<Item = Result<RecordBatch, Status>> + Send + 'static) -> Response<DoGetStream> {
    let data =
        FlightDataEncoderBuilder::new().with_schema(schema).build(rows.map_err(|s| FlightError::Tonic(Box::new(s)))).map_err(Status::from);
    Response::new(Box::pin(data))
}

fn one_batch<E: std::fmt::Display>(batch: Result<RecordBatch, E>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    Ok(stream_of(batch.schema(), futures::stream::once(async { Ok(batch) })))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

fn within_length(sql: &str) -> Result<(), Status> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Status::invalid_argument(format!("statements are limited to {MAX_SQL_BYTES} bytes")));
    }
    Ok(())
}

fn read_only_refusal(what: &str) -> Status {
    Status::permission_denied(format!("crowsnest serves read-only SQL: {what} is refused"))
}

fn sql_of(bytes: &[u8]) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Status::invalid_argument("the ticket is not a statement"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let peer = request.remote_addr().map_or_else(|| "?".to_string(), |a| a.to_string());
        let (user, token) = self.auth.sign_in(request.metadata()).inspect_err(|s| {
            log::warn!(target: "crowsnest::sql", "refused a sign-in from {peer}: {}", s.message());
        })?;
        log::info!(target: "crowsnest::sql", "user={user} signed in from {peer}");
        // Go's client (ADBC, Grafana) sends no message and reads the token from the headers.
        let header = format!("Bearer {token}").parse().map_err(|_| Status::internal("a session token that is no header value"))?;
        let reply = HandshakeResponse { protocol_version: 0, payload: token.into_bytes().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> = Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(&request)?;
        let schema = self.schema_of(&user, &query.query, None).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(&self, ticket: TicketStatementQuery, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        let user = self.user(&request)?;
        // The ticket carries the text: it is planned again here, read-only, as its user.
        self.run(&user, &sql_of(&ticket.statement_handle)?, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let user = self.user(&request)?;
        let df = self.plan(&user, &query.query, None).await?;
        let dataset = wire::schema(df.schema().inner());
        // `$1`, `$2`… in order; a parameter whose type the plan cannot tell is sent as null.
        let mut params: Vec<(usize, Field)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .into_iter()
            .map(|(name, ty)| {
                let n = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                (n, Field::new(name, ty.unwrap_or(datafusion::arrow::datatypes::DataType::Null), true))
            })
            .collect();
        params.sort_by_key(|(n, _)| *n);
        let param_schema = Schema::new(params.into_iter().map(|(_, f)| f).collect::<Vec<_>>());
        let mut handle = vec![0u8; 16];
        openssl::rand::rand_bytes(&mut handle).map_err(|_| Status::internal("no random bytes"))?;
        {
            let mut map = self.prepared.lock().expect("prepared lock");
            let now = Instant::now();
            map.retain(|_, p| now.duration_since(p.created) < SESSION_TTL);
            if map.values().filter(|p| p.user == user).count() >= MAX_PREPARED_PER_USER {
                if let Some(oldest) = map.iter().filter(|(_, p)| p.user == user).min_by_key(|(_, p)| p.created).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
            map.insert(handle.clone(), Prepared { user, sql: query.query, params: None, created: now });
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&param_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let user = self.user(&request)?;
        self.with_prepared(&user, &query.prepared_statement_handle, |_| ())?;
        // Read as it comes, and stop at the second row: one row of parameters is all that binds.
        let data = request.into_inner().map_err(|s| FlightError::Tonic(Box::new(s)));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let mut row: Option<RecordBatch> = None;
        while let Some(b) = batches.next().await {
            let b = b.map_err(|e| Status::invalid_argument(e.to_string()))?;
            if b.num_rows() > 1 || (b.num_rows() == 1 && row.is_some()) {
                return Err(Status::invalid_argument("bind one row of parameters at a time"));
            }
            if b.num_rows() == 1 {
                row = Some(b);
            }
        }
        let params = match &row {
            Some(b) => b
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            None => Vec::new(),
        };
        self.with_prepared(&user, &query.prepared_statement_handle, |p| p.params = Some(params))?;
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(&request)?;
        let (sql, params) = self.with_prepared(&user, &cmd.prepared_statement_handle, |p| (p.sql.clone(), p.params.clone()))?;
        let schema = self.schema_of(&user, &sql, params.as_deref()).await?;
        info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let user = self.user(&request)?;
        let (sql, params) = self.with_prepared(&user, &cmd.prepared_statement_handle, |p| (p.sql.clone(), p.params.clone()))?;
        self.run(&user, &sql, params).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let user = self.user(&request)?;
        self.with_prepared(&user, &query.prepared_statement_handle, |_| ())?;
        self.prepared.lock().expect("prepared lock").remove(query.prepared_statement_handle.as_ref());
        Ok(())
    }

    // Metadata: each GetFlightInfo answers a ticket that is the command itself.

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, GetCatalogsBuilder::new().schema(), query)
    }

    async fn do_get_catalogs(&self, query: CommandGetCatalogs, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut b = query.into_builder();
        for c in self.executor.context().catalog_names() {
            b.append(c);
        }
        one_batch(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, query.clone().into_builder().schema(), query)
    }

    async fn do_get_schemas(&self, query: CommandGetDbSchemas, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        one_batch(metadata::db_schemas(self.executor.context(), query))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, query.clone().into_builder().schema(), query)
    }

    async fn do_get_tables(&self, query: CommandGetTables, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        one_batch(metadata::tables(self.executor.context(), query).await)
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, query.clone().into_builder().schema(), query)
    }

    async fn do_get_table_types(&self, query: CommandGetTableTypes, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut b = query.into_builder();
        for t in metadata::table_types() {
            b.append(t);
        }
        one_batch(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, query.clone().into_builder(metadata::sql_info()).schema(), query)
    }

    async fn do_get_sql_info(&self, query: CommandGetSqlInfo, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        one_batch(
            query.into_builder(metadata::sql_info()).build().map_err(|e| datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, query.clone().into_builder(metadata::type_info()).schema(), query)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        one_batch(
            query.into_builder(metadata::type_info()).build().map_err(|e| datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))),
        )
    }

    // Writes: refused, and logged as refusals.

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let user = self.user(&request)?;
        let s = read_only_refusal("an update statement");
        QueryLog::start(&user, &cmd.query).finish(0, 0, &Err(s.clone()));
        Err(s)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let user = self.user(&request)?;
        let s = read_only_refusal(&format!("bulk ingestion into {:?}", cmd.table));
        QueryLog::start(&user, &format!("INGEST {}", cmd.table)).finish(0, 0, &Err(s.clone()));
        Err(s)
    }

    async fn do_put_prepared_statement_update(
        &self,
        _cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.user(&request)?;
        Err(read_only_refusal("an update statement"))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
