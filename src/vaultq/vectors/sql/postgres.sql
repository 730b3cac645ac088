-- Named queries of the pgvector store. Every value is a bound parameter; the only
-- identifiers ({table}) and the dimension ({dimension}) are composed by psycopg.sql from
-- a validated collection name and integer.
-- vaultq.vector_collections is the catalog; each collection is one table
-- vaultq_vectors.<name>: embedding vector(dimension) with an HNSW index (indexed), or
-- sealed_vector bytea (sealed). metadata is canonical JSON text, so equal metadata is equal
-- text. message_id is COLLATE "C": its primary-key order is byte order, as in SQLite.

-- schema --
SELECT pg_advisory_xact_lock(hashtext('vaultq.vectors.schema'));
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS vaultq;
CREATE SCHEMA IF NOT EXISTS vaultq_vectors;
CREATE TABLE IF NOT EXISTS vaultq.vector_collections (
    name text PRIMARY KEY,
    dimension integer NOT NULL,
    mode text NOT NULL,
    metric text NOT NULL,
    model text
);
-- Catalogs made before collections recorded their embedding model gain the column (NULL:
-- none recorded). Checked first: ALTER TABLE would lock the catalog on every open.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM information_schema.columns
        WHERE table_schema = 'vaultq' AND table_name = 'vector_collections'
            AND column_name = 'model'
    ) THEN
        ALTER TABLE vaultq.vector_collections ADD COLUMN model text;
    END IF;
END
$$;

-- lock_collection --
-- Creators of one collection take turns, so two never race on CREATE TABLE.
SELECT pg_advisory_xact_lock(hashtext('vaultq.vectors.collection'), hashtext(%(name)s));

-- create_collection --
INSERT INTO vaultq.vector_collections (name, dimension, mode, metric, model)
VALUES (%(name)s, %(dimension)s, %(mode)s, %(metric)s, %(model)s)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- adopt_model --
-- A collection with no model recorded (made before models were, or by a caller that named
-- none) takes the first model a creator with its other settings names: that is how existing
-- collections come under the one-model check.
UPDATE vaultq.vector_collections SET model = %(model)s
WHERE name = %(name)s AND model IS NULL AND dimension = %(dimension)s AND mode = %(mode)s
    AND metric = %(metric)s;

-- get_collection --
SELECT name, dimension, mode, metric, model FROM vaultq.vector_collections
WHERE name = %(name)s;

-- create_indexed_table --
CREATE TABLE {table} (
    tenant text NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    embedding vector({dimension}) NOT NULL,
    metadata text NOT NULL,
    PRIMARY KEY (tenant, message_id)
);

-- create_hnsw_index --
CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops);

-- create_sealed_table --
CREATE TABLE {table} (
    tenant text NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    sealed_vector bytea NOT NULL,
    metadata text NOT NULL,
    PRIMARY KEY (tenant, message_id)
);

-- upsert_indexed --
-- An identical item matches the WHERE of neither branch: no row changes and it is not
-- counted. The vectors arrive as text of their float32 values, which vector reads exactly.
INSERT INTO {table} AS item (tenant, message_id, embedding, metadata)
SELECT tenant, message_id, embedding::vector, metadata
FROM unnest(%(tenants)s::text[], %(message_ids)s::text[], %(vectors)s::text[],
            %(metadata)s::text[]) AS batch (tenant, message_id, embedding, metadata)
ON CONFLICT (tenant, message_id) DO UPDATE
SET embedding = excluded.embedding, metadata = excluded.metadata
WHERE item.embedding IS DISTINCT FROM excluded.embedding
   OR item.metadata IS DISTINCT FROM excluded.metadata;

-- upsert_sealed --
INSERT INTO {table} AS item (tenant, message_id, sealed_vector, metadata)
SELECT tenant, message_id, sealed_vector, metadata
FROM unnest(%(tenants)s::text[], %(message_ids)s::text[], %(vectors)s::bytea[],
            %(metadata)s::text[]) AS batch (tenant, message_id, sealed_vector, metadata)
ON CONFLICT (tenant, message_id) DO UPDATE
SET sealed_vector = excluded.sealed_vector, metadata = excluded.metadata
WHERE item.sealed_vector IS DISTINCT FROM excluded.sealed_vector
   OR item.metadata IS DISTINCT FROM excluded.metadata;

-- delete_items --
DELETE FROM {table} WHERE tenant = %(tenant)s AND message_id = ANY(%(message_ids)s::text[]);

-- count_items --
SELECT count(*) FROM {table} WHERE tenant = %(tenant)s;

-- search_candidates --
-- Exact, never the HNSW index (approximate): the MATERIALIZED scan of the tenant's rows
-- cannot be answered by an index ordered on <=>. pgvector's float32 distances only screen:
-- every row within %(margin)s of the k-th best is returned, and the caller scores those
-- again in float64, so order and scores equal a float64 brute force.
WITH scored AS MATERIALIZED (
    SELECT message_id, embedding <=> %(query)s::vector AS distance
    FROM {table} WHERE tenant = %(tenant)s
), cutoff AS (
    SELECT distance FROM scored ORDER BY distance LIMIT 1 OFFSET %(k)s - 1
)
SELECT item.message_id, vector_send(item.embedding), item.metadata
FROM scored JOIN {table} AS item
    ON item.tenant = %(tenant)s AND item.message_id = scored.message_id
WHERE scored.distance
    <= coalesce((SELECT max(distance) FROM cutoff), 'Infinity'::float8) + %(margin)s;

-- sealed_page --
SELECT message_id, sealed_vector, metadata FROM {table}
WHERE tenant = %(tenant)s AND message_id > %(after)s COLLATE "C"
ORDER BY message_id COLLATE "C"
LIMIT %(limit)s;
