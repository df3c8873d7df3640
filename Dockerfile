# ccproxy's container image: one image for every command (extproc,
# controlplane, admin, migrate), `ccproxy` as the entrypoint.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse HEAD) -t ccproxy .
#
# Where no Docker daemon is at hand, `make image` builds the same image
# (same entrypoint, user, files and version label) from a static binary
# with Go alone (cmd/ccproxy-image). Base images are pinned by digest;
# refresh a digest deliberately, after checking what the new one holds.

# The admin dashboard (React + Vite), embedded into the binary by go:embed.
FROM node:22-bookworm-slim@sha256:83f487e0a63425e5b4d146fb5e5be574bcbe1b7b843d3ebafdd95eaf7767a7e5 AS dashboard
WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

FROM golang:1.26@sha256:ec4debba7b371fb2eaa6169a72fc61ad93b9be6a9ae9da2a010cb81a760d36e7 AS build
ARG VERSION=dev
ARG COMMIT=
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=dashboard /src/dashboard/dist ./dashboard/dist
# Static (no cgo): the runtime image has no C library.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/ccproxy ./cmd/ccproxy

# distroless static: CA certificates, tzdata, /etc/passwd with the nonroot
# user (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:b7bb25d9f7c31d2bdd1982feb4dafcaf137703c7075dbe2febb41c24212b946f
ARG VERSION=dev
ARG COMMIT=
LABEL org.opencontainers.image.title=ccproxy \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${COMMIT}
COPY --from=build /out/ccproxy /usr/local/bin/ccproxy
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ccproxy"]
