package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Client makes a client for o's endpoint: o.S3Endpoint, else
// AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (an S3-compatible store; path-
// style requests), else AWS. Credentials: o's keys, else the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN — a
// Secret mounted as environment variables), else a shared credentials
// file (AWS_SHARED_CREDENTIALS_FILE — a Secret mounted as a file), else
// the instance's role.
func s3Client(o *Options) (*minio.Client, error) {
	endpoint := firstNonEmpty(o.S3Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"))
	region := firstNonEmpty(o.S3Region, os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION"))
	host, secure, pathStyle := "s3.amazonaws.com", true, false
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return nil, fmt.Errorf("bad S3 endpoint %q: want https://host[:port]", endpoint)
		}
		if u.Scheme == "http" && !o.AllowHTTP {
			return nil, fmt.Errorf("the S3 endpoint %s is plain http; use https, or allow http explicitly (--allow-http)", endpoint)
		}
		host, secure, pathStyle = u.Host, u.Scheme == "https", true
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
	})
	if o.S3AccessKey != "" {
		creds = credentials.NewStaticV4(o.S3AccessKey, o.S3SecretKey, o.S3SessionToken)
	}
	lookup := minio.BucketLookupAuto
	if pathStyle {
		lookup = minio.BucketLookupPath
	}
	var transport http.RoundTripper
	if o.Client != nil {
		transport = o.Client.Transport
	}
	return minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region, BucketLookup: lookup, Transport: transport})
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// listS3 lists the objects under s3://bucket/prefix: one object when the
// prefix names it, else every object under prefix/ (named relative to
// it).
func listS3(ctx context.Context, o *Options, src Source) ([]remote, error) {
	c, err := s3Client(o)
	if err != nil {
		return nil, err
	}
	var files []remote
	err = withRetries(ctx, o, "listing the bucket", func(ctx context.Context) error {
		files = files[:0]
		dir := src.Prefix
		if dir != "" && !strings.HasSuffix(dir, "/") {
			dir += "/"
		}
		for obj := range c.ListObjects(ctx, src.Bucket, minio.ListObjectsOptions{Prefix: src.Prefix, Recursive: true}) {
			if obj.Err != nil {
				return s3Error(obj.Err, "listing s3://"+src.Bucket+"/"+src.Prefix)
			}
			var name string
			switch {
			case obj.Key == src.Prefix && src.Prefix != "" && !strings.HasSuffix(src.Prefix, "/"):
				name = path.Base(obj.Key) // the prefix names one object
			case strings.HasPrefix(obj.Key, dir):
				name = strings.TrimPrefix(obj.Key, dir)
			default:
				continue // s3://b/model also lists s3://b/model-v2/…: not ours
			}
			if name == "" || strings.HasSuffix(obj.Key, "/") {
				continue // a folder marker
			}
			etag := strings.Trim(obj.ETag, `"`)
			r := remote{name: name, size: obj.Size}
			// A single-part upload's ETag is its MD5 (a multipart one has
			// "-N" at the end and is no checksum of the bytes).
			if isHex(etag, 32) {
				r.md5 = etag
			}
			r.get = &s3Getter{c: c, bucket: src.Bucket, key: obj.Key, etag: etag, size: obj.Size}
			files = append(files, r)
		}
		return nil
	})
	return files, err
}

// s3Getter reads byte ranges of one object, pinned to its ETag.
type s3Getter struct {
	c           *minio.Client
	bucket, key string
	etag        string
	size        int64
}

func (g *s3Getter) ranged() bool     { return true }
func (g *s3Getter) identity() string { return g.etag }

func (g *s3Getter) get(ctx context.Context, off, end int64) (io.ReadCloser, error) {
	var opts minio.GetObjectOptions
	if g.etag != "" {
		if err := opts.SetMatchETag(g.etag); err != nil {
			return nil, permanent("%v", err)
		}
	}
	if end < 0 {
		end = g.size
	}
	if off > 0 || end < g.size {
		if err := opts.SetRange(off, end-1); err != nil {
			return nil, permanent("%v", err)
		}
	}
	obj, err := g.c.GetObject(ctx, g.bucket, g.key, opts)
	if err != nil {
		return nil, s3Error(err, "GET s3://"+g.bucket+"/"+g.key)
	}
	// The request goes out on the first Read or Stat: make it now, so that
	// its failure is classified here.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s3Error(err, "GET s3://"+g.bucket+"/"+g.key)
	}
	return obj, nil
}

// s3Error classifies an S3 failure: wrong credentials, a missing bucket
// or key, or a changed object are permanent; the rest (5xx, the
// network) are retried.
func s3Error(err error, what string) error {
	resp := minio.ToErrorResponse(err)
	if resp.StatusCode == 0 {
		var ue *url.Error
		if errors.As(err, &ue) || strings.Contains(err.Error(), "connection") {
			return err
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	msg := fmt.Sprintf("%s: %d %s: %s", what, resp.StatusCode, resp.Code, resp.Message)
	switch resp.StatusCode {
	case http.StatusForbidden, http.StatusUnauthorized:
		return permanentStatus(resp.StatusCode, "%s (check the credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the mounted credentials file)", msg)
	case http.StatusNotFound:
		return permanentStatus(resp.StatusCode, "%s (no such bucket or key)", msg)
	case http.StatusPreconditionFailed:
		return permanentStatus(resp.StatusCode, "%s (the object changed since the download began)", msg)
	case http.StatusRequestedRangeNotSatisfiable:
		return permanentStatus(resp.StatusCode, "%s", msg)
	}
	return &retryAfterError{err: errors.New(msg)}
}
