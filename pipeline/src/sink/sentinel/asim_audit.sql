-- One kube_audit row as one row of the Microsoft Sentinel table ASimAuditEventLogs (ASIM Audit
-- Event schema 0.1.2), sent to the DCR stream Custom-CrowsnestAuditEvents, which flows unchanged
-- (transformKql: source) into the output stream Microsoft-ASimAuditEventLogs.
--
-- Every alias is a column of ASimAuditEventLogs, in the order and with the types of
-- asim_columns::ASIM_AUDIT_COLUMNS (the DCR's stream declaration). Only columns the table has:
-- EventSchema, Dvc, User, Application, Src, Dst, IpAddr, Value, Rule and EventUid are not table
-- columns; the ASIM parsers (_Im_AuditEvent / _ASim_AuditEvent, native part) add them at query time.
--
-- Sources: https://learn.microsoft.com/azure/azure-monitor/reference/tables/asimauditeventlogs
-- (columns, types), https://learn.microsoft.com/azure/sentinel/normalization-schema-audit (fields,
-- allowed values), normalization-common-fields, normalization-entity-user/-device/-application.
-- No WHERE here: the sink appends the user's events_where.
SELECT
  event_time AS "TimeGenerated",                                      -- requestReceivedTimestamp
  event_time AS "EventStartTime",
  COALESCE(stage_time, event_time) AS "EventEndTime",                 -- stageTimestamp: when this stage (e.g. ResponseComplete) was reached
  CAST(1 AS INT) AS "EventCount",                                     -- one audit event per row

  -- EventType, audit schema's allowed values (Set, Read, Create, Delete, Execute, Install, Clear,
  -- Enable, Disable, Initialize, Start, Stop, Other). exec/attach/portforward are first: kubectl
  -- exec arrives as create (POST) or get (websocket upgrade) on pods/exec.
  CASE
    WHEN lower(subresource) IN ('exec', 'attach', 'portforward') THEN 'Execute'
    WHEN lower(verb) = 'create' THEN 'Create'
    WHEN lower(verb) IN ('update', 'patch') THEN 'Set'
    WHEN lower(verb) IN ('delete', 'deletecollection') THEN 'Delete'
    WHEN lower(verb) IN ('get', 'list', 'watch') THEN 'Read'
    ELSE 'Other'                                                      -- impersonate, bind, escalate, approve, use, non-resource post/put…
  END AS "EventType",
  NULLIF(subresource, '') AS "EventSubType",                          -- choice: the subresource (exec, status, scale, token…) refines EventType

  -- EventResult: Success, Partial, Failure or NA. 1xx (101: exec/attach upgrade) and 2xx succeed;
  -- no code (RequestReceived stage) or 3xx is NA.
  CASE
    WHEN response_code IS NULL THEN 'NA'
    WHEN response_code < 300 THEN 'Success'
    WHEN response_code >= 400 THEN 'Failure'
    ELSE 'NA'
  END AS "EventResult",
  COALESCE(NULLIF(response_reason, ''), CAST(response_code AS VARCHAR)) AS "EventResultDetails", -- the API server's reason (Forbidden, NotFound…), else the code
  CAST(response_code AS VARCHAR) AS "EventOriginalResultDetails",     -- the HTTP status code as text
  CASE WHEN response_code >= 400 THEN 'Low' ELSE 'Informational' END AS "EventSeverity", -- as ASIM's own Azure activity audit parser does
  audit_id AS "EventOriginalUid",                                     -- auditID (shared by the stages of one request)
  verb AS "EventOriginalType",                                        -- choice: the source value EventType is derived from (stage and category go to AdditionalFields)

  -- ASIM lists no Kubernetes product; the product's name, in the style of its Microsoft entries
  -- ('Azure Firewall', 'Azure Blob Storage').
  'Azure Kubernetes Service' AS "EventProduct",
  'Microsoft' AS "EventVendor",
  '0.1.2' AS "EventSchemaVersion",                                    -- Audit Event schema version documented (EventSchema itself is not a table column)

  -- Operation: the verb, and the resource/subresource it applied to: 'get pods',
  -- 'create pods/exec', 'patch deployments/scale'; a non-resource request ('/healthz') is its verb.
  NULLIF(concat_ws(' ', NULLIF(verb, ''), NULLIF(concat_ws('/', NULLIF(resource, ''), NULLIF(subresource, '')), '')), '') AS "Operation",
  -- Object: namespace/resource/name ('web/deployments/frontend', 'clusterroles/admin', a collection
  -- 'web/pods'); a non-resource request, its path.
  COALESCE(
    NULLIF(concat_ws('/', NULLIF(namespace, ''), NULLIF(resource, ''), NULLIF(name, '')), ''),
    split_part(request_uri, '?', 1)
  ) AS "Object",
  -- ObjectType, allowed values: Cloud Resource, Configuration Atom, Policy Rule, Event Log,
  -- Scheduled Task, Service, Directory Service Object, Other. Choice: authorization, network and
  -- admission policies are Policy Rule, ConfigMaps Configuration Atom, CronJobs Scheduled Task,
  -- any other API object a Cloud Resource (as ASIM's Azure activity parser types Azure
  -- resources); a non-resource URL is Other.
  CASE
    WHEN NULLIF(resource, '') IS NULL THEN 'Other'
    WHEN api_group = 'rbac.authorization.k8s.io' AND resource IN ('roles', 'clusterroles', 'rolebindings', 'clusterrolebindings')
      THEN 'Policy Rule'
    WHEN api_group = 'networking.k8s.io' AND resource = 'networkpolicies' THEN 'Policy Rule'
    WHEN api_group = 'admissionregistration.k8s.io' THEN 'Policy Rule'   -- admission policies, their bindings, webhook configurations
    WHEN COALESCE(api_group, '') = '' AND resource = 'configmaps' THEN 'Configuration Atom'
    WHEN api_group = 'batch' AND resource = 'cronjobs' THEN 'Scheduled Task'
    ELSE 'Cloud Resource'
  END AS "ObjectType",
  -- OriginalObjectType: the resource as kubectl names it, resource.group ('deployments.apps',
  -- 'clusterroles.rbac.authorization.k8s.io'; core resources without a group: 'pods').
  CASE
    WHEN NULLIF(resource, '') IS NOT NULL AND COALESCE(api_group, '') <> '' THEN concat(resource, '.', api_group)
    ELSE NULLIF(resource, '')
  END AS "OriginalObjectType",

  -- Actor: the authenticated user (an impersonator stays the actor; who it impersonated is in
  -- AdditionalFields). UsernameType allowed values: UPN, Windows, DN, Simple, AWSId.
  NULLIF(user_name, '') AS "ActorUsername",
  CASE
    WHEN user_name LIKE '%@%' THEN 'UPN'                              -- Entra ID user
    WHEN NULLIF(user_name, '') IS NOT NULL THEN 'Simple'              -- system:serviceaccount:ns:sa, system:node:…, masterclient, an object id…
  END AS "ActorUsernameType",
  -- UserType allowed values: Regular, Machine, Admin, System, Application, Service Principal,
  -- Service, Anonymous, Other. Choice: Kubernetes service accounts are Service, kubelets Machine,
  -- the control plane's own system: users System, Entra ID UPNs Regular, anything else Other.
  CASE
    WHEN user_name = 'system:anonymous' THEN 'Anonymous'
    WHEN user_name LIKE 'system:serviceaccount:%' THEN 'Service'
    WHEN user_name LIKE 'system:node:%' THEN 'Machine'
    WHEN user_name LIKE 'system:%' THEN 'System'
    WHEN user_name LIKE '%@%' THEN 'Regular'
    WHEN NULLIF(user_name, '') IS NOT NULL THEN 'Other'
  END AS "ActorUserType",
  -- ActorUserId only when it is the Entra ID object id: UserIdType has no value for a Kubernetes
  -- user.uid (SID, UID (Linux), AADID, OktaId, AWSId, PUID, SalesforceId), so user_uid goes to
  -- AdditionalFields.
  NULLIF(user_oid, '') AS "ActorUserId",
  CASE WHEN NULLIF(user_oid, '') IS NOT NULL THEN 'AADID' END AS "ActorUserIdType",
  NULLIF(user_oid, '') AS "ActorUserAadId",                           -- the ID-specific field, filled as well (ASIM user entity)

  NULLIF(source_ip, '') AS "SrcIpAddr",                               -- first of sourceIPs (all of them: AdditionalFields.source_ips)
  NULLIF(user_agent, '') AS "HttpUserAgent",
  -- ActingApp: the client the actor used, the product part of its user agent, as CN-AUDIT-080
  -- derives it (kubectl, helm, kube-controller-manager, Go-http-client…). Client-supplied, so
  -- only as trustworthy as HttpUserAgent. AppType: Process, Service, Resource, URL,
  -- SaaS application, CSP, Other.
  NULLIF(split_part(split_part(user_agent, '/', 1), ' ', 1), '') AS "ActingAppName",
  CASE WHEN NULLIF(split_part(split_part(user_agent, '/', 1), ' ', 1), '') IS NOT NULL THEN 'Other' END AS "ActingAppType",

  -- TargetApp: the cluster's API server, named by the cluster (last segment of its ARM id), or
  -- kube-apiserver when the event came without the AKS envelope.
  COALESCE(regexp_replace(NULLIF(cluster, ''), '^.*/', ''), 'kube-apiserver') AS "TargetAppName",
  'Service' AS "TargetAppType",
  request_uri AS "TargetUrl",                                         -- requestURI: path and query, relative to the API server

  -- Dvc: the reporting device is the cluster's control plane; its id is the cluster's Azure
  -- resource id (the ASIM parser's Dvc alias then resolves to it). No DvcHostname: the API server
  -- has none of its own, and AKS names may contain '_', which the Hostname type excludes.
  NULLIF(cluster, '') AS "DvcId",
  CASE WHEN NULLIF(cluster, '') IS NOT NULL THEN 'AzureResourceId' END AS "DvcIdType",
  CASE WHEN upper(cluster) LIKE '/SUBSCRIPTIONS/%' THEN lower(split_part(cluster, '/', 3)) END AS "DvcScopeId", -- the subscription id
  -- DvcAction: what the API server's authorizer decided (annotation authorization.k8s.io/decision).
  CASE lower(authz_decision) WHEN 'allow' THEN 'Allow' WHEN 'forbid' THEN 'Deny' END AS "DvcAction",
  NULLIF(authz_decision, '') AS "DvcOriginalAction",

  -- The Kubernetes specifics no ASIM column holds, under their kube_audit column names.
  named_struct(
    'stage', stage,
    'level', level,
    'category', category,
    'api_group', api_group,
    'api_version', api_version,
    'resource', resource,
    'subresource', subresource,
    'namespace', namespace,
    'name', name,
    'object_kind', object_kind,
    'impersonated_user', impersonated_user,
    'authz_decision', authz_decision,
    'authz_reason', authz_reason,
    'user_uid', user_uid,
    'user_groups', user_groups,
    'source_ips', source_ips
  ) AS "AdditionalFields"
FROM kube_audit
