-- phase: expand
-- Content model of the RailsPress MCP API: users, posts, pages, taxonomy.
CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    email       text NOT NULL,
    name        text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Guide, Database Optimization: idx_users_email (unique: one account per address).
CREATE UNIQUE INDEX idx_users_email ON users (email);

CREATE TABLE posts (
    id            bigserial PRIMARY KEY,
    author_id     bigint NOT NULL REFERENCES users (id),
    slug          text NOT NULL UNIQUE,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    excerpt       text NOT NULL DEFAULT '',
    body          text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'archived')),
    published_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', excerpt), 'B')
        || setweight(to_tsvector('english', body), 'C')
    ) STORED
);
CREATE INDEX idx_posts_status_published_at ON posts (status, published_at);
CREATE INDEX idx_posts_author_id ON posts (author_id);
CREATE INDEX idx_posts_search ON posts USING gin (search_vector);

CREATE TABLE pages (
    id            bigserial PRIMARY KEY,
    author_id     bigint NOT NULL REFERENCES users (id),
    slug          text NOT NULL UNIQUE,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    body          text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'archived')),
    published_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', body), 'C')
    ) STORED
);
CREATE INDEX idx_pages_status_published_at ON pages (status, published_at);
CREATE INDEX idx_pages_search ON pages USING gin (search_vector);

CREATE TABLE categories (
    id    bigserial PRIMARY KEY,
    slug  text NOT NULL UNIQUE,
    name  text NOT NULL
);

CREATE TABLE tags (
    id    bigserial PRIMARY KEY,
    slug  text NOT NULL UNIQUE,
    name  text NOT NULL
);

CREATE TABLE post_categories (
    post_id      bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    category_id  bigint NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    PRIMARY KEY (post_id, category_id)
);
CREATE INDEX idx_post_categories_category_id ON post_categories (category_id);

CREATE TABLE post_tags (
    post_id  bigint NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    tag_id   bigint NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    PRIMARY KEY (post_id, tag_id)
);
CREATE INDEX idx_post_tags_tag_id ON post_tags (tag_id);
