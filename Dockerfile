# syntax=docker/dockerfile:1
# Multi-stage build of a small static berth image.
#
# GO_IMAGE is an ARG so that machines without a registry can supply a local
# Go image (see internal/testenv); everyone else gets the public one.
ARG GO_IMAGE=golang:1.26-alpine

FROM ${GO_IMAGE} AS build
WORKDIR /src
# Modules download during the build; a context that carries vendor/ builds offline.
COPY . .
ARG VERSION=dev
# berth-dns, the DNS-01 helper, is a program of its own: it links lego's DNS
# providers, which the daemon does not (cmd/berth-dns says why).
RUN CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/berth ./cmd/berth \
 && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o /out/berth-dns ./cmd/berth-dns \
 && mkdir -p /out/etc/ssl/certs /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

FROM scratch
COPY --from=build /out/ /
# Healthy while berth watches Docker events and has a confirmed nginx; it
# asks the daemon through the socket in BERTH_STATE_DIR.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["/berth", "health"]
ENTRYPOINT ["/berth"]
CMD ["run"]
